// Prints llama.cpp's logits for every position of a token list, for smelt's logits interop test.
// Usage: llama_logits MODEL.gguf OUT.f32 TOKEN...   (OUT: n_tokens rows of n_vocab little-endian f32)
// Built by tests/interop_eval.rs against the static libraries of the llama.cpp reference build.
// Weights stay in their file layout (no repacking into llama.cpp's extra buffer types), so
// quantized products take ggml's plain CPU kernels (tiled k-quants, vec_dot, tinyBLAS).
#include "llama.h"

#include <cstdio>
#include <cstdlib>

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL OUT TOKEN...\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = false;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    const int n = argc - 3;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n < 512 ? 512 : n;
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
        batch.token[i] = atoi(argv[3 + i]);
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) return 1;
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    FILE * out = fopen(argv[2], "wb");
    if (!out) return 1;
    for (int i = 0; i < n; ++i) {
        fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, out);
    }
    fclose(out);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
