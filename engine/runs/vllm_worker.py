"""A generation worker run with vLLM's own interpreter (not llmtui's): token ids in, token ids out.

vLLM pins its own torch and transformers, so it lives in an environment of its own; llmtui starts this
file by path with that interpreter and speaks JSON lines over its stdin/stdout (everything else the
libraries print goes to stderr). It imports nothing of llmtui but the stop rule
(``engine.results.scoring``, plain Python). Protocol:

    argv[1]: {"model", "dtype", "max_model_len", "trust_remote_code", "seed", "kv_cache_memory_bytes" (or null)}
    out: {"ready": true, "vllm": version, "torch": version}  or  {"error": message} (then exit 1)
    in:  {"prompts": [[token id, …], …], "max_new_tokens": N, "stop_token_ids": [id, …]}
    out: {"done": [[prompt index, [generated token ids]], …]} as rows finish, then {"finished": true}
    in:  end of input: exit

Greedy decoding, stopped at a stop token, at the ceiling, or one token after the first ``\\boxed{…}``
closes: a per-request logits processor forces a stop token then (vLLM's string stops cannot balance
nested braces). llmtui cuts the tokens at the same rule as its own engine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # llmtui's root, for the one stop rule

from engine.results.scoring import first_box_closed  # noqa: E402

try:  # importable where vLLM is installed; llmtui's own interpreter only reads this file's path
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor
except ImportError:  # pragma: no cover - llmtui's interpreter
    AdapterLogitsProcessor = object

#: ``SamplingParams.extra_args`` key that turns the box stop on for a request (its value: the stop token).
BOX_STOP_KEY = "llmtui_box_stop"
ERROR_CHARS = 400


class BoxStop(AdapterLogitsProcessor):
    """Forces the request's stop token once its first ``\\boxed{…}`` has closed (nested braces counted)."""

    def __init__(self, vllm_config, device, is_pin_memory):
        super().__init__(vllm_config, device, is_pin_memory)
        from transformers import AutoTokenizer

        config = vllm_config.model_config
        self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, trust_remote_code=config.trust_remote_code)
        decoded = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))], skip_special_tokens=False)
        self.closers = {i for i, text in enumerate(decoded) if "}" in text}  # only these can close a box

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is chosen

    def new_req_logits_processor(self, params):
        stop = (params.extra_args or {}).get(BOX_STOP_KEY)
        if stop is None:
            return None
        tokenizer, closers = self.tokenizer, self.closers

        def force_stop_after_box(output_ids, logits):
            if output_ids and output_ids[-1] in closers and first_box_closed(
                    tokenizer.decode(output_ids, skip_special_tokens=True)):
                forced = logits.new_full(logits.shape, float("-inf"))
                forced[stop] = 0.0
                return forced
            return logits

        return force_stop_after_box


def _send(channel, message: dict) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def main() -> int:
    # The protocol gets the real stdout; anything the libraries print goes to stderr.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    config = json.loads(sys.argv[1])
    try:
        import torch
        import vllm
        from vllm import LLM, SamplingParams

        reserve = {"kv_cache_memory_bytes": config["kv_cache_memory_bytes"]} if config.get("kv_cache_memory_bytes") \
            else {}
        llm = LLM(model=config["model"], dtype=config["dtype"], enforce_eager=True, seed=config.get("seed", 0),
                  max_model_len=config["max_model_len"], trust_remote_code=config.get("trust_remote_code", False),
                  logits_processors=[BoxStop], **reserve)
    except Exception as exc:  # any reason vLLM cannot load the model is reported, not a traceback
        # on one line, cut short: vLLM's messages can list every architecture it supports
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        _send(channel, {"error": message if len(message) <= ERROR_CHARS else message[:ERROR_CHARS] + " …"})
        return 1
    _send(channel, {"ready": True, "vllm": vllm.__version__, "torch": torch.__version__})
    engine = llm.llm_engine
    for line in sys.stdin:
        request = json.loads(line)
        stops = [int(t) for t in request["stop_token_ids"]]
        params = SamplingParams(temperature=0.0, max_tokens=int(request["max_new_tokens"]), stop_token_ids=stops,
                                ignore_eos=False, skip_special_tokens=False, detokenize=False,
                                extra_args={BOX_STOP_KEY: stops[0]} if stops and request.get("box_stop", True)
                                else None)
        for index, ids in enumerate(request["prompts"]):
            engine.add_request(str(index), {"prompt_token_ids": ids}, params)
        while engine.has_unfinished_requests():
            done = [[int(out.request_id), list(out.outputs[0].token_ids)] for out in engine.step() if out.finished]
            if done:
                _send(channel, {"done": done})
        _send(channel, {"finished": True})
    return 0


if __name__ == "__main__":  # vLLM starts its engine with spawn, which imports this file again
    sys.exit(main())
