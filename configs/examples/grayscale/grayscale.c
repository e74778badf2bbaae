/*
 * grayscale: a WASI function for Spillway (and any OSCAR-style staging contract).
 *
 * Reads the image at $INPUT_FILE_PATH (PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PNM), writes into
 * $TMP_OUTPUT_DIR a grayscale copy (<name>-gray.png) and a thumbnail at most 128 pixels on its
 * longer side (<name>-thumb.png). Build: ./build.sh (clang + wasi-libc + libstb-dev).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STBI_NO_THREAD_LOCALS
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>

#define THUMB_MAX 128

static const char *required(const char *name) {
    const char *value = getenv(name);
    if (value == NULL || *value == '\0') {
        fprintf(stderr, "grayscale: %s is not set (run me through a Spillway or OSCAR agent)\n", name);
        exit(64);
    }
    return value;
}

int main(void) {
    const char *input = required("INPUT_FILE_PATH");
    const char *out_dir = required("TMP_OUTPUT_DIR");
    const char *file_name = required("FILE_NAME");

    char stem[256];
    snprintf(stem, sizeof stem, "%s", file_name);
    char *dot = strrchr(stem, '.');
    if (dot != NULL && dot != stem) *dot = '\0';

    int width, height, channels;
    unsigned char *gray = stbi_load(input, &width, &height, &channels, 1);
    if (gray == NULL) {
        fprintf(stderr, "grayscale: cannot decode %s as an image: %s\n", file_name, stbi_failure_reason());
        return 2;
    }

    char path[1024];
    snprintf(path, sizeof path, "%s/%s-gray.png", out_dir, stem);
    if (!stbi_write_png(path, width, height, 1, gray, width)) {
        fprintf(stderr, "grayscale: cannot write %s\n", path);
        return 3;
    }

    int longer = width > height ? width : height;
    int tw = width, th = height;
    if (longer > THUMB_MAX) {
        tw = (int)((long)width * THUMB_MAX / longer);
        th = (int)((long)height * THUMB_MAX / longer);
        if (tw < 1) tw = 1;
        if (th < 1) th = 1;
    }
    unsigned char *thumb = malloc((size_t)tw * th);
    if (thumb == NULL || !stbir_resize_uint8(gray, width, height, 0, thumb, tw, th, 0, 1)) {
        fprintf(stderr, "grayscale: cannot resize %s\n", file_name);
        return 4;
    }
    snprintf(path, sizeof path, "%s/%s-thumb.png", out_dir, stem);
    if (!stbi_write_png(path, tw, th, 1, thumb, tw)) {
        fprintf(stderr, "grayscale: cannot write %s\n", path);
        return 3;
    }
    printf("%s: %dx%d (%d channels) -> %s-gray.png %dx%d, %s-thumb.png %dx%d\n",
           file_name, width, height, channels, stem, width, height, stem, tw, th);
    stbi_image_free(gray);
    free(thumb);
    return 0;
}
