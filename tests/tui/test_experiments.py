"""Experiments screen flows: build a preset in the form, inline errors, save, queue, unsaved edits."""

from __future__ import annotations

from textual.widgets import Input, OptionList, Select, Static

from engine.presets.config import load_preset
from engine.jobs.store import JobStore
from tui_workspace import wait_for
from tui.modals.confirm import ConfirmModal
from tui.modals.name_prompt import NamePrompt
from tui.screens.experiments import ExperimentsScreen
from tui.widgets.preset_form import FieldRow


async def _open(app, pilot) -> ExperimentsScreen:
    await pilot.press("2")
    screen = app.screen
    assert isinstance(screen, ExperimentsScreen)
    await wait_for(pilot, lambda: screen.saved_values is not None, what="the first preset in the form")
    return screen


async def _type_into(pilot, screen, widget_id: str, text: str) -> None:
    screen.query_one(f"#{widget_id}", Input).focus()
    await pilot.press("end", "ctrl+u", *text)


def _summary(screen) -> str:
    return str(screen.query_one("#plan-summary", Static).render())


def _messages(app) -> list[str]:
    return [n.message for n in app._notifications]


async def _choose_preset(pilot, screen, name: str) -> None:
    presets = screen.query_one("#presets", OptionList)
    presets.focus()
    names = [p.name for p in screen.info.presets]
    presets.highlighted = names.index(name)
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.current is not None and screen.current.stem == name and not screen.dirty(),
                   what=f"{name} in the form")


async def test_build_a_preset_see_the_name_fix_an_inline_error_and_save(demo_ws, tui_app):
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: screen.current is None, what="a new preset")
        assert "Qwen3-0.6B-openmath_SFT_LoRa256_NoQuant" in _summary(screen)  # the defaults

        await _type_into(pilot, screen, "f-model-base", "Models/tiny-qwen3")
        dataset = screen.query_one("#f-data-dataset", Select)
        dataset.focus()
        await pilot.press("enter", "b", "o", "enter")  # open the list, type to search, choose
        assert dataset.value == "boolq"
        await _type_into(pilot, screen, "f-peft-r", "0")
        await pilot.pause()
        row = screen.query_one("#f-peft-r").parent.parent
        assert isinstance(row, FieldRow) and row.has_class("-invalid")
        assert "0 is below the minimum 1" in str(row.query_one(".field-error").render())
        assert "cannot save or queue" in _summary(screen)

        await pilot.press("ctrl+s")  # refused while invalid
        await pilot.pause()
        assert not isinstance(app.screen, NamePrompt)
        assert any("peft.r: 0 is below the minimum 1" in m for m in _messages(app))

        await _type_into(pilot, screen, "f-peft-r", "8")
        await pilot.pause()
        assert not row.has_class("-invalid")
        assert "Models/tiny-qwen3-boolq_SFT_LoRa8_NoQuant" in _summary(screen)  # the live name
        assert "1. train ~" in _summary(screen) and " GB GPU · " in _summary(screen)  # each step's memory estimate

        await pilot.press("ctrl+s")  # a new preset asks for its name
        await wait_for(pilot, lambda: isinstance(app.screen, NamePrompt), what="the name prompt")
        await pilot.press("ctrl+u", *"../my exp", "enter")  # sanitized into experiments/
        path = demo_ws.experiments_dir / "my_exp.toml"
        await wait_for(pilot, path.exists, what="the saved preset")
        await wait_for(pilot, lambda: not screen.dirty(), what="the form to be clean")
        saved = load_preset(path)
        assert saved.to_dict() == screen.config.to_dict()
        assert (saved.model.base, saved.data.dataset, saved.peft.r) == ("Models/tiny-qwen3", "boolq", 8)

        await _type_into(pilot, screen, "f-peft-r", "12")
        await pilot.press("ctrl+s")  # an opened preset is saved in place
        await wait_for(pilot, lambda: load_preset(path).peft.r == 12, what="the second save")
        assert screen.current == path

        await app.run_on_screen("experiments", "add_ptq_step")  # the palette's "Add a PTQ step"
        await _type_into(pilot, screen, "f-ptq-0-bits", "8")
        await pilot.pause()
        assert "GPTQ 8-bit PTQ of tiny-qwen3-boolq_SFT_LoRa12_NoQuant" in _summary(screen)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: load_preset(path).ptq, what="the PTQ step on disk")
        assert [(s.method, s.bits, s.group_size) for s in load_preset(path).ptq] == [("GPTQ", 8, 64)]


async def test_ctrl_r_queues_the_whole_pipeline_and_an_invalid_form_cannot_be_queued(demo_ws, tui_app):
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        await _choose_preset(pilot, screen, "arc-qlora-gptq")  # train → GPTQ → eval of both outputs
        await pilot.press("ctrl+r")
        await wait_for(pilot, demo_ws.queue_db.exists, what="the queue")
        with JobStore(demo_ws) as store:
            await wait_for(pilot, lambda: len(store.list()) == 4, what="four jobs")
            jobs = store.list()
        name = "tiny-qwen3-arc_SFT_LoRa16_QLORA_w4_headbf16"
        quantized = f"{name}_GPTQ_w4_g64_headfp16"
        assert [(j.kind, j.target) for j in jobs] == [("train", name), ("quantize", quantized), ("eval", name),
                                                      ("eval", quantized)]
        train, quantize, eval_a, eval_b = jobs
        assert quantize.depends_on == [train.id] and eval_a.depends_on == [train.id]
        assert eval_b.depends_on == [quantize.id]
        assert train.preset == screen.config.to_toml()

        await _type_into(pilot, screen, "f-train-learning_rate", "2")
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        with JobStore(demo_ws) as store:
            assert len(store.list()) == 4
        assert any("train.learning_rate: 2.0 must be less than 1" in m for m in _messages(app))


async def test_unsaved_edits_are_never_lost_silently(demo_ws, tui_app):
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        await _choose_preset(pilot, screen, "boolq-full")
        await _type_into(pilot, screen, "f-train-max_steps", "77")
        await pilot.pause()
        assert screen.dirty() and "unsaved" in _summary(screen)

        presets = screen.query_one("#presets", OptionList)
        presets.focus()
        presets.highlighted = 0
        await pilot.press("enter")  # open another preset: asks first
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("n")
        await pilot.pause()
        assert screen.current.stem == "boolq-full"
        assert screen.query_one("#f-train-max_steps", Input).value == "77"

        await pilot.press("q")  # quitting asks too
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the quit confirmation")
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and screen.dirty()


async def test_duplicate_and_delete_with_confirmation(demo_ws, tui_app):
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        await _choose_preset(pilot, screen, "boolq-lora")
        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: isinstance(app.screen, NamePrompt), what="the name prompt")
        assert app.screen.query_one(Input).value == "boolq-lora-copy"
        await pilot.press("enter")
        copy = demo_ws.experiments_dir / "boolq-lora-copy.toml"
        await wait_for(pilot, copy.exists, what="the copy")
        assert load_preset(copy).to_dict() == load_preset(demo_ws.experiments_dir / "boolq-lora.toml").to_dict()
        await wait_for(pilot, lambda: screen.current == copy, what="the copy to be open")

        screen.query_one("#presets", OptionList).focus()
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: not copy.exists(), what="the deletion")
        await wait_for(pilot, lambda: "boolq-lora-copy" not in [p.name for p in screen.info.presets],
                       what="the list to drop it")


async def test_a_preset_with_a_ptq_step_loads_without_a_transient_problem(demo_ws, tui_app):
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        seen: list[list[str]] = []  # the problems every summary shown while loading listed
        show = screen.update_summary

        def recording(data, unplaced):
            seen.append([str(p) for p in screen.problems])
            show(data, unplaced)

        screen.update_summary = recording
        for _ in range(3):  # the race showed intermittently: load it (and another) a few times
            await _choose_preset(pilot, screen, "arc-qlora-gptq")
            await _choose_preset(pilot, screen, "boolq-lora")
        await _choose_preset(pilot, screen, "arc-qlora-gptq")
        assert seen and all(problems == [] for problems in seen), [p for p in seen if p]
        assert "cannot save or queue" not in _summary(screen)
        assert "GPTQ 4-bit PTQ" in _summary(screen)


async def test_ptq_steps_can_be_reordered_and_are_saved_in_that_order(demo_ws, tui_app):
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        await _choose_preset(pilot, screen, "arc-qlora-gptq")
        await app.run_on_screen("experiments", "add_ptq_step")
        method = screen.query_one("#f-ptq-1-method", Select)
        method.value = "HQQ"
        await _type_into(pilot, screen, "f-ptq-1-bits", "3")  # typed, kept through the move
        await pilot.pause()
        assert screen.query(".move-ptq").first().id == "down-ptq-0"
        screen.query_one("#up-ptq-1").focus()  # keyboard: tab to the button, enter
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.query("#f-ptq-0-method")
                       and screen.query_one("#f-ptq-0-method", Select).value == "HQQ", what="the move")
        await pilot.pause()
        assert screen.query_one("#f-ptq-0-bits", Input).value == "3"
        assert screen.query_one("#f-ptq-1-method", Select).value == "GPTQ"
        steps = [(s.method, s.bits) for s in screen.config.ptq]
        assert steps == [("HQQ", 3), ("GPTQ", 4)]
        await pilot.press("ctrl+s")
        path = demo_ws.experiments_dir / "arc-qlora-gptq.toml"
        await wait_for(pilot, lambda: len(load_preset(path).ptq) == 2, what="the save")
        assert [(s.method, s.bits) for s in load_preset(path).ptq] == [("HQQ", 3), ("GPTQ", 4)]


async def test_saving_from_the_form_keeps_the_file_as_written(demo_ws, tui_app):
    path = demo_ws.experiments_dir / "arc-qlora-gptq.toml"
    written = path.read_text()
    assert written.startswith("# QLoRA on synthetic ARC")
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        await _choose_preset(pilot, screen, "arc-qlora-gptq")
        await pilot.press("ctrl+s")  # no edits: byte-identical
        await wait_for(pilot, lambda: any("saved experiments/arc-qlora-gptq.toml" in m for m in _messages(app)),
                       what="the first save")
        assert path.read_text() == written

        await _type_into(pilot, screen, "f-train-max_steps", "80")  # one key
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: path.read_text() != written, what="the second save")
        assert path.read_text() == written.replace("max_steps = 50\n", "max_steps = 80\n")


async def test_escape_leaves_a_form_field_so_digits_switch_screens(demo_ws, tui_app):
    """Tab into ``peft.r``, type, Escape, then ``3``: Jobs opens and r keeps what was typed (the ``3`` is not
    typed into the field)."""
    from tui.screens.jobs import JobsScreen

    app = tui_app(demo_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(app, pilot)
        r = screen.query_one("#f-peft-r", Input)
        for _ in range(60):  # from the presets list, Tab through the form to peft.r
            if screen.focused is r:
                break
            await pilot.press("tab")
        assert screen.focused is r
        await pilot.press("end", "ctrl+u", "8")
        await pilot.press("escape")
        assert screen.focused is screen.query_one("#presets", OptionList)
        await pilot.press("3")
        assert isinstance(app.screen, JobsScreen)
        assert r.value == "8"


async def test_padding_free_and_loss_chunk_are_in_the_form_and_saved(demo_ws, tui_app):
    from textual.widgets import Switch

    path = demo_ws.experiments_dir / "arc-qlora-gptq.toml"
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open(app, pilot)
        await _choose_preset(pilot, screen, "arc-qlora-gptq")
        switch = screen.query_one("#f-train-padding_free", Switch)
        assert switch.value is True and screen.query_one("#f-train-loss_chunk_tokens", Input).value == "128"
        switch.value = False
        await _type_into(pilot, screen, "f-train-loss_chunk_tokens", "0")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "loss_chunk_tokens = 0" in path.read_text(), what="the save")
    train = load_preset(path).train
    assert train.padding_free is False and train.loss_chunk_tokens == 0
