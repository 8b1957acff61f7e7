"""Build a tiny causal language model of a common family, with a byte-level BPE tokenizer trained
here on a few sentences, and save both as a local Hugging Face model directory (no hub): the shape
of GPT-2, Pythia or Llama/Qwen at 2 layers, d_model 32, 4 heads, 300 tokens, trained a few hundred
steps on the standard library's docstrings (theorycraft's default ``hf:`` corpus; ``--steps 0``:
random weights).

    python examples/lm/make_tiny_lm.py gpt2 runs/tiny-lm       # or gpt_neox, llama, qwen2
    theorycraft sites hf:runs/tiny-lm
"""

from __future__ import annotations

import argparse

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the tokens before it.",
    "Attention heads move information between positions; the MLP reads and writes the residual stream.",
    "Return the number of items in a container, or raise an error if the argument is not a sequence.",
)
FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2")


def tiny_tokenizer(vocab_size: int = 300, texts=SENTENCES):
    """A byte-level BPE trained on ``texts`` (every text encodes, no unknown token) with one
    end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_model(family: str, vocab_size: int, seed: int = 0, positions: int = 64):
    """A random-weight causal LM of ``family``: 2 layers, d_model 32, 4 heads (2 key-value heads
    for the Llama-style ones: grouped-query attention), ``positions`` positions."""
    import torch
    import transformers as tf

    ends = {"bos_token_id": 0, "eos_token_id": 0}  # the tokenizer's <|endoftext|>
    small = {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": positions, **ends}
    configs = {
        "gpt2": lambda: (tf.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=positions,
                                       **ends), tf.GPT2LMHeadModel),
        "gpt_neox": lambda: (tf.GPTNeoXConfig(intermediate_size=64, **small), tf.GPTNeoXForCausalLM),
        "llama": lambda: (tf.LlamaConfig(intermediate_size=64, num_key_value_heads=2, **small), tf.LlamaForCausalLM),
        "qwen2": lambda: (tf.Qwen2Config(intermediate_size=64, num_key_value_heads=2, **small), tf.Qwen2ForCausalLM),
    }
    if family not in configs:
        raise SystemExit(f"unknown family '{family}'; expected one of: {', '.join(configs)}")
    config, model_class = configs[family]()
    torch.manual_seed(seed)
    return model_class(config).eval()


def train(model, tokenizer, steps: int, seed: int = 0, window: int = 16, batch: int = 16, texts=SENTENCES):
    """``steps`` of AdamW on next-token prediction over random windows of ``texts`` (joined by the
    end-of-text token), so that the model predicts something and splicing has a loss to recover."""
    import torch

    ids = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor(ids)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - window, (batch,), generator=generator)
        tokens = torch.stack([ids[s:s + window] for s in starts.tolist()])
        loss = model(input_ids=tokens, labels=tokens).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def save_tiny_lm(family: str, out, tokenizer=None, seed: int = 0, steps: int = 0, texts=SENTENCES,
                 window: int = 16) -> None:
    """The model (trained ``steps`` steps on ``texts``) and its tokenizer, saved to ``out`` for ``hf:OUT``."""
    tokenizer = tokenizer or tiny_tokenizer(texts=texts)
    model = tiny_model(family, len(tokenizer), seed)
    if steps:
        train(model, tokenizer, steps, seed, window, texts=texts)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


if __name__ == "__main__":
    import torch

    from theorycraft.targets._hf import stdlib_docstrings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("out", help="the model directory to write (then target hf:OUT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300, help="training steps (0: random weights)")
    parser.add_argument("--docs", type=int, default=400, help="standard-library docstrings to train the tokenizer "
                        "and the model on (theorycraft's default hf: corpus; 0: the few SENTENCES)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread
    texts = stdlib_docstrings()[:args.docs] if args.docs else SENTENCES
    save_tiny_lm(args.family, args.out, seed=args.seed, steps=args.steps, texts=texts, window=64)
    print(f"wrote a tiny {args.family} ({args.steps} training steps) to {args.out}: theorycraft sites hf:{args.out}")
