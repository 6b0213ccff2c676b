"""Chat with one model folder: load it once, render the conversation with the one prompt builder
(:mod:`engine.data.prompts`, the text evaluation would send), stream the answer as it is generated.

:class:`ChatSession` is used in-process by ``llmtui chat MODEL``; :func:`serve` runs it behind a JSON-lines
protocol on stdin/stdout for the TUI's Chat screen (``llmtui chat-server MODEL``, a long-lived child
process, so the TUI never imports torch). Runs in those two processes only.

Protocol, one JSON object per line. The server sends ``{"type": "ready", "model", "kind", "device",
"template"}`` once the model is loaded, or ``{"type": "error", "fatal": true, "message"}`` and exits 1.
Requests carry an ``id`` echoed in the replies:
  ``{"type": "render", "id", "messages", "system"}`` → ``{"type": "prompt", "id", "text"}``
  ``{"type": "generate", "id", "messages", "system", "temperature", "top_p", "seed", "max_new_tokens"}``
      → ``prompt``, then ``{"type": "token", "id", "text"}`` per piece of text, then
        ``{"type": "done", "id", "text", "tokens", "seconds", "first_token_s", "stopped"}``
        (or ``{"type": "error", "id", "message"}``); ``seconds`` and ``first_token_s`` are measured from the
        start of generation (after rendering), so the Arena's columns compare the models, not the pipes
  ``{"type": "stop"}`` ends the answer being generated (``stopped`` true). End of input ends the server.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

#: The knobs a request may set, with their limits (a value outside is an error, not clamped).
MAX_NEW_TOKENS_LIMIT = 8192


class ChatRequestError(ValueError):
    """A request the server cannot follow (the message names the field)."""


@dataclass
class ChatSettings:
    """Decoding: greedy when ``temperature`` is 0 (the default, like evaluation), else sampling from
    ``seed`` (the same seed gives the same sample, so the Arena's columns draw alike)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> "ChatSettings":
        settings = cls()
        for name, kind, low, high in (("temperature", float, 0.0, 10.0), ("top_p", float, 0.0, 1.0),
                                      ("max_new_tokens", int, 1, MAX_NEW_TOKENS_LIMIT),
                                      ("seed", int, 0, 2**32 - 1)):
            if name not in request:
                continue
            value = request[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ChatRequestError(f"{name}: expected a number, got {value!r}")
            if not low <= value <= high or (name == "top_p" and value == 0):
                raise ChatRequestError(f"{name}: {value} is outside {low}..{high}")
            setattr(settings, name, kind(value))
        return settings


def conversation(messages: Iterable[dict[str, Any]], system: str | None) -> list[dict[str, str]]:
    """The messages the prompt builder renders: the system prompt (when given), then the turns."""
    turns = [] if not system else [{"role": "system", "content": system}]
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant") \
                or not isinstance(message.get("content"), str):
            raise ChatRequestError(f"messages: each turn needs a role user|assistant and text, got {message!r}")
        turns.append({"role": message["role"], "content": message["content"]})
    if not turns or turns[-1]["role"] != "user":
        raise ChatRequestError("messages: the last turn must be the user's")
    return turns


class ChatSession:
    """One loaded model (any kind :func:`engine.runs.loading.load_for_inference` loads)."""

    def __init__(self, model_dir: Path | str, *, device: str | None = None, trust_remote_code: bool = False) -> None:
        from engine.runs.loading import load_for_inference

        self.model_dir = Path(model_dir)
        self.loaded = load_for_inference(self.model_dir, device=device, trust_remote_code=trust_remote_code)

    @property
    def has_template(self) -> bool:
        return bool(getattr(self.loaded.tokenizer, "chat_template", None))

    def render(self, messages: Iterable[dict[str, Any]], system: str | None) -> str:
        """The exact prompt text: the one prompt builder's rendering with the generation prompt."""
        from engine.data.prompts import render

        return render(self.loaded.tokenizer, conversation(messages, system), add_generation_prompt=True)

    def generate(self, prompt: str, settings: ChatSettings, on_text: Callable[[str], None],
                 stop: threading.Event | None = None) -> tuple[str, int, bool]:
        """Generate the answer to ``prompt`` as evaluation would (the one tokenizing rule and stop tokens of
        :mod:`engine.data.prompts`), handing each new piece of text to ``on_text``; returns (answer, new
        tokens, stopped early by ``stop``)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        from engine.data.prompts import tokenize_prompts
        from engine.runs.generation import greedy_generation_config, input_device  # evaluation's stop rule

        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        config = greedy_generation_config(model, tokenizer, settings.max_new_tokens)
        if settings.temperature > 0:
            config.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
            torch.manual_seed(settings.seed)
        device = input_device(model)
        input_ids = torch.tensor(tokenize_prompts(tokenizer, [prompt]), dtype=torch.long, device=device)
        pieces: list[str] = []

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    pieces.append(text)
                    on_text(text)

        class StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), bool(stop and stop.is_set()), dtype=torch.bool,
                                  device=input_ids.device)

        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    generation_config=config,
                                    streamer=Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
                                    stopping_criteria=StoppingCriteriaList([StopWhenAsked()]))
        return "".join(pieces), int(output.shape[1] - input_ids.shape[1]), bool(stop and stop.is_set())


def _requests(stream, inbox: queue.Queue, stop: threading.Event) -> None:
    """Read request lines into ``inbox`` (a ``stop`` request sets ``stop`` at once); None at end of input."""
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError as exc:
            request = {"type": "invalid", "message": f"not JSON: {exc}"}
        if isinstance(request, dict) and request.get("type") == "stop":
            stop.set()
            continue
        inbox.put(request)
    inbox.put(None)


def serve(model_dir: Path | str, *, device: str | None = None, threads: int | None = None, requests=None,
          replies=None, trust_remote_code: bool = False) -> int:
    """Load ``model_dir`` and answer requests until the input ends (see the module docstring); ``threads``
    caps torch's CPU threads (the Arena divides the cores between its servers)."""
    if replies is None:  # keep fd 1 for the protocol: what libraries print goes to stderr
        replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)
    requests = sys.stdin if requests is None else requests

    def send(reply_type: str, /, **data: Any) -> None:
        replies.write(json.dumps({"type": reply_type, **data}) + "\n")
        replies.flush()

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        session = ChatSession(model_dir, device=device, trust_remote_code=trust_remote_code)
    except Exception as exc:  # any load failure is reported to the screen, which shows it
        send("error", fatal=True, message=f"{type(exc).__name__}: {exc}")
        return 1
    send("ready", model=session.model_dir.name, kind=session.loaded.kind,
         device=str(session.loaded.info.get("device", "")), template=session.has_template)
    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_requests, args=(requests, inbox, stop), daemon=True).start()
    while (request := inbox.get()) is not None:
        ident = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict) or request.get("type") not in ("render", "generate"):
                raise ChatRequestError(request.get("message") if isinstance(request, dict) and
                                       request.get("type") == "invalid" else f"unknown request {request!r}")
            settings = ChatSettings.from_request(request)
            prompt = session.render(request.get("messages") or [], request.get("system"))
            send("prompt", id=ident, text=prompt)
            if request["type"] == "generate":
                stop.clear()
                started = time.perf_counter()
                first: list[float] = []

                def on_text(piece: str) -> None:
                    if not first:
                        first.append(time.perf_counter() - started)
                    send("token", id=ident, text=piece)

                text, tokens, stopped = session.generate(prompt, settings, on_text, stop)
                send("done", id=ident, text=text, tokens=tokens, seconds=round(time.perf_counter() - started, 3),
                     first_token_s=round(first[0], 3) if first else None, stopped=stopped)
        except ChatRequestError as exc:
            send("error", id=ident, message=str(exc))
        except Exception as exc:  # a failed generation leaves the server (and the loaded model) usable
            send("error", id=ident, message=f"{type(exc).__name__}: {exc}")
    return 0
