/* peak_rss.h - the peak resident memory of this process, in MiB, for the bench programs.

   Linux: VmHWM of /proc/self/status, the high-water mark of this program's own address space.
   Not getrusage's ru_maxrss: Linux carries that across execve, so a program started by a large
   parent (bench/models.py has imported torch, ~520 MiB) reports at least the parent's size (the
   vits14 inference step read 524 MiB that way, 200 MiB of its own). Elsewhere: ru_maxrss (KiB
   on Linux and the BSDs, bytes on macOS). */
#ifndef BENCH_PEAK_RSS_H
#define BENCH_PEAK_RSS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double peak_rss_mb(void) {
    struct rusage r;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        double kib = -1;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM:", 6)) {
                kib = atof(line + 6);
                break;
            }
        fclose(f);
        if (kib >= 0) return kib / 1024.0;
    }
    getrusage(RUSAGE_SELF, &r);
#ifdef __APPLE__
    return r.ru_maxrss / 1048576.0;
#else
    return r.ru_maxrss / 1024.0;
#endif
}
#endif
