#define HUMANVIT_IMPLEMENTATION
#include "../humanvit.h"
