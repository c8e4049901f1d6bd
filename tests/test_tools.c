/* test_tools.c - the command-line tools end to end: convert_checkpoint and vit_classify, with
   their bad-input paths (clear message, non-zero status, nothing clobbered). Runs the binaries
   that build.sh built under build/. */
#include "testlib.h"

/* runs a shell command, capturing its output into build/tests/tool.out; returns the exit status */
static int run(const char *cmd) {
    char full[2048];
    int rc;
    snprintf(full, sizeof full, "%s > build/tests/tool.out 2>&1", cmd);
    rc = system(full);
    if (rc == -1) return -1;
    return rc > 255 ? rc >> 8 : rc; /* POSIX wait status */
}
static int output_has(const char *text) {
    static char buf[65536];
    FILE *f = fopen("build/tests/tool.out", "rb");
    size_t n;
    if (!f) return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, text) != NULL;
}
static int file_is(const char *path, const char *content) {
    char buf[256];
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strcmp(buf, content) == 0;
}
static void write_file(const char *path, const char *content) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
}

static void test_convert_checkpoint(hv_ctx *ctx) {
    hv_state_dict *a, *b;
    int i, n;
    CHECK(run("build/convert_checkpoint tests/fixtures/models/mae_tiny.pth build/tests/mae_tiny.safetensors") == 0, "convert failed");
    a = hv_torch_load(ctx, "tests/fixtures/models/mae_tiny.pth", NULL);
    b = hv_safetensors_load(ctx, "build/tests/mae_tiny.safetensors");
    CHECK_NOTNULL(a);
    CHECK_NOTNULL(b);
    if (!a || !b) return;
    n = hv_state_dict_count(a);
    CHECK(n == hv_state_dict_count(b), "%d vs %d tensors", n, hv_state_dict_count(b));
    for (i = 0; i < n; i++) {
        hv_tensor *x = hv_state_dict_at(a, i), *y = hv_state_dict_get(b, hv_state_dict_name(a, i));
        CHECK(y && hv_numel(x) == hv_numel(y) && !memcmp(hv_data(x), hv_data(y), sizeof(float) * (size_t)hv_numel(x)), "%s differs",
              hv_state_dict_name(a, i));
    }
    hv_state_dict_free(a);
    hv_state_dict_free(b);
    /* bad inputs: usage errors exit 2, unreadable input exits 1, an existing output survives */
    CHECK(run("build/convert_checkpoint") == 2 && output_has("usage"), "no arguments");
    CHECK(run("build/convert_checkpoint a b --bogus") == 2 && output_has("--bogus"), "bad flag");
    write_file("build/tests/keep.safetensors", "precious");
    CHECK(run("build/convert_checkpoint tests/fixtures/models/absent.pth build/tests/keep.safetensors") == 1 && output_has("absent.pth"),
          "missing input");
    CHECK(run("build/convert_checkpoint tests/fixtures/models/tables.safetensors build/tests/keep.safetensors") == 1, "not a .pth");
    CHECK(file_is("build/tests/keep.safetensors", "precious"), "existing output was clobbered");
}

/* a random ViT-S/14 saved as safetensors, classified by the tool from an .npy, compared with the
   same forward in this process */
static void test_vit_classify(hv_ctx *ctx) {
    hv_vit_desc d;
    hv_vit *vit;
    hv_state_dict *sd;
    hv_tensor *x, *ref, *got;
    memset(&d, 0, sizeof d);
    d.preset = HV_VIT_S14;
    d.num_classes = 10;
    vit = hv_vit_new(ctx, &d);
    sd = hv_params_state_dict(ctx, hv_vit_params(vit));
    CHECK(sd && hv_safetensors_save(sd, "build/tests/vits14_c10.safetensors") == 0, "%s", hv_last_error());
    hv_state_dict_free(sd);
    x = hv_randn(ctx, HV_SHAPE(2, 3, 224, 224), 0, 1);
    CHECK(hv_npy_save("build/tests/two_images.npy", x) == 0, "%s", hv_last_error());
    CHECK(run("build/vit_classify --checkpoint build/tests/vits14_c10.safetensors --input build/tests/two_images.npy --topk 3 "
              "--save-output build/tests/logits.npy") == 0,
          "vit_classify failed");
    CHECK(output_has("input 1:") && output_has("class"), "no top-k lines");
    hv_set_grad_enabled(ctx, 0);
    ref = hv_vit_forward(vit, x, 0);
    got = hv_npy_load(ctx, "build/tests/logits.npy");
    CHECK(got && hv_numel(got) == 20, "logits file: %s", hv_last_error());
    if (got && ref) {
        double *r = tl_to_double(ref);
        CHECK(tl_rel_err(hv_data(got), r, 20, 1e-6) < 1e-5, "tool logits differ from the in-process forward");
        free(r);
    }
    hv_set_grad_enabled(ctx, 1);
    /* bad inputs */
    CHECK(run("build/vit_classify --input x.png") == 2 && output_has("--checkpoint"), "no model");
    CHECK(run("build/vit_classify --checkpoint a --model-id vits14_1.0_1 --input x") == 2, "both model flags");
    CHECK(run("build/vit_classify --checkpoint build/tests/vits14_c10.safetensors") == 2 && output_has("--input"), "no input");
    CHECK(run("build/vit_classify --checkpoint build/tests/vits14_c10.safetensors --input x --topk zero") == 2 && output_has("zero"), "bad topk");
    CHECK(run("build/vit_classify --model-id vits14_0.1_2 --models-dir build/tests/none --input x.png") == 1 &&
              output_has("vits14/vits14_0.1_2.pth") && output_has("huggingface.co"),
          "missing model file should say what to download");
    CHECK(run("build/vit_classify --checkpoint build/tests/vits14_c10.safetensors --input tests/fixtures/models/absent.png") == 1 &&
              output_has("absent.png"),
          "missing image");
    CHECK(run("build/vit_classify --checkpoint build/tests/vits14_c10.safetensors --arch vitb14 --input build/tests/two_images.npy") == 1 &&
              output_has("768"),
          "wrong architecture should name the shape mismatch");
    hv_tensor_free(x);
    hv_vit_free(vit);
}

int main(void) {
    hv_ctx *ctx = hv_init(NULL);
    TL_RUN(ctx, test_convert_checkpoint);
    TL_RUN(ctx, test_vit_classify);
    hv_shutdown(ctx);
    TL_DONE();
}
