"""`pagedkv.LLM` on tiny checkpoints saved in the test (nothing downloaded): text in, text out, equal to
HF `generate` + decode in float64, for every family; chat template; stop strings; EOS; streaming;
abort; logprobs; repetition penalty; min_tokens; timings and cached-prefix tokens."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from checkpoints import hf_reference, save_checkpoint  # noqa: E402

import pagedkv  # noqa: E402
from pagedkv.engine import LLM, InvalidPrompt, SamplingParams  # noqa: E402
from pagedkv.engine.families import FAMILIES  # noqa: E402

PROMPTS = ["Hello world! The quick", "Paged attention reads keys", "When two requests share a prompt"]
GREEDY = SamplingParams(temperature=0, max_tokens=12)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("llama"), "llama", seed=3)


@pytest.fixture(scope="module")
def llm(folder) -> LLM:
    return LLM(folder, dtype="float64", num_blocks=64, block_size=4)


def clean(llm: LLM) -> None:
    manager = llm.engine.block_manager
    manager.check_invariants()
    assert len(manager) == 0 and manager.num_free_blocks == manager.num_blocks
    assert not llm.has_unfinished_requests()


def hf_text(llm: LLM, folder: Path, prompt_ids: list[int], max_new_tokens: int, **kwargs) -> tuple[list, str]:
    ids = hf_reference(folder, prompt_ids, max_new_tokens, **kwargs)
    return ids, llm.tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("shard", [False, True], ids=["one-file", "sharded"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_text_in_text_out_equals_hf_generate(tmp_path: Path, family: str, shard: bool) -> None:
    overrides = {"gemma3": {"sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]}}
    folder = save_checkpoint(tmp_path, family, seed=7, shard=shard, **overrides.get(family, {}))
    if shard:
        assert len(list(folder.glob("model-*.safetensors"))) > 1
    llm = LLM(folder, dtype="float64", num_blocks=64, block_size=4)
    outputs = llm.generate(PROMPTS, GREEDY)
    assert [o.prompt for o in outputs] == PROMPTS
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        assert output.prompt_token_ids == llm.tokenizer(prompt).input_ids
        ids, text = hf_text(llm, folder, output.prompt_token_ids, 12)
        (sample,) = output.outputs
        assert sample.token_ids == ids
        assert sample.text == text
        assert sample.finish_reason == ("eos" if ids[-1] == llm.tokenizer.eos_token_id else "length")
    clean(llm)


def test_a_single_prompt_and_token_ids(llm) -> None:
    (by_text,) = llm.generate(PROMPTS[0], GREEDY)
    (by_ids,) = llm.generate(by_text.prompt_token_ids, GREEDY)
    assert by_ids.prompt is None
    assert by_ids.outputs[0].token_ids == by_text.outputs[0].token_ids
    assert by_ids.outputs[0].text == by_text.outputs[0].text != ""


def test_chat_messages_go_through_the_chat_template(llm, folder) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world!"}]
    (output,) = llm.generate([messages], GREEDY)
    rendered = "<s><|system|>Be brief.</s><|user|>Hello world!</s><|assistant|>"
    assert output.prompt == rendered
    assert output.prompt_token_ids == llm.tokenizer(rendered, add_special_tokens=False).input_ids
    assert output.prompt_token_ids[0] == llm.tokenizer.bos_token_id  # once, from the template
    assert output.outputs[0].token_ids == hf_reference(folder, output.prompt_token_ids, 12)
    (alone,) = llm.generate(messages, GREEDY)  # one conversation, not a list of them
    assert alone.outputs[0].token_ids == output.outputs[0].token_ids


def test_chat_without_a_template_is_a_typed_error(tmp_path: Path) -> None:
    llm = LLM(save_checkpoint(tmp_path, chat_template=False), dtype="float64", num_blocks=32)
    with pytest.raises(InvalidPrompt, match="need a chat template, and this tokenizer has none"):
        llm.generate([[{"role": "user", "content": "hi"}]], GREEDY)
    with pytest.raises(InvalidPrompt, match="needs 'role' and 'content'"):
        llm.generate([[{"text": "hi"}]], GREEDY)


def free_run(llm: LLM, prompt: str, max_tokens: int = 24) -> tuple[list[int], str]:
    (out,) = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
    return out.outputs[0].token_ids, out.outputs[0].text


def test_stop_strings_cut_the_text_exactly(llm) -> None:
    ids, text = free_run(llm, PROMPTS[1])
    stop = text[9:12]
    assert stop and text.find(stop) <= 9
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop=["never there", stop])
    (out,) = llm.generate(PROMPTS[1], params)
    sample = out.outputs[0]
    assert sample.text == text[: text.find(stop)]
    assert (sample.finish_reason, sample.stop_reason) == ("stop", stop)
    # it ended on the token that completed the stop string, not later
    decoded = llm.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
    assert stop in decoded and stop not in llm.tokenizer.decode(
        sample.token_ids[:-1], skip_special_tokens=True
    )
    assert sample.token_ids == ids[: len(sample.token_ids)]
    clean(llm)


def test_min_tokens_defers_stop_strings(llm) -> None:
    _, text = free_run(llm, PROMPTS[1])
    stop = text[9:12]
    stopped = llm.generate(
        PROMPTS[1], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop=stop)
    )
    first_stop = len(stopped[0].outputs[0].token_ids)
    params = SamplingParams(
        temperature=0, max_tokens=24, ignore_eos=True, stop=stop, min_tokens=first_stop + 1
    )
    (out,) = llm.generate(PROMPTS[1], params)
    assert len(out.outputs[0].token_ids) > first_stop


def test_eos_and_stop_token_ids_end_a_request(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path / "base", seed=5)
    base = LLM(folder, dtype="float64", num_blocks=64)
    ids, _ = free_run(base, PROMPTS[0])
    eos = next(t for i, t in enumerate(ids) if i >= 3 and t not in ids[:i])
    at = ids.index(eos)
    # EOS from generation_config.json (a list, as chat models have), the tokenizer's own EOS too
    eos_folder = save_checkpoint(tmp_path / "eos", seed=5, eos_token_id=[eos, 2])
    llm = LLM(eos_folder, dtype="float64", num_blocks=64)
    (out,) = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=24))
    sample = out.outputs[0]
    assert sample.token_ids == ids[: at + 1] == hf_reference(eos_folder, out.prompt_token_ids, 24)
    assert (sample.finish_reason, sample.stop_reason) == ("eos", None)
    (ignored,) = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    assert ignored.outputs[0].token_ids == ids
    # min_tokens masks EOS until then, as HF's min_new_tokens does
    params = SamplingParams(temperature=0, max_tokens=24, min_tokens=at + 2)
    (late,) = llm.generate(PROMPTS[0], params)
    expected = hf_reference(eos_folder, out.prompt_token_ids, 24, min_new_tokens=at + 2)
    assert late.outputs[0].token_ids == expected and len(expected) > at + 1
    # a stop token id ends it the same way, reported as "stop"
    (stopped,) = base.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=24, stop_token_ids=[eos]))
    assert stopped.outputs[0].token_ids == ids[: at + 1]
    assert (stopped.outputs[0].finish_reason, stopped.outputs[0].stop_reason) == ("stop", eos)


def test_repetition_penalty_matches_hf(llm, folder) -> None:
    params = SamplingParams(temperature=0, max_tokens=12, repetition_penalty=1.8, ignore_eos=True)
    (out,) = llm.generate(PROMPTS[2], params)
    plain, _ = free_run(llm, PROMPTS[2], 12)
    llm.engine.eos_token_ids = frozenset()
    expected = hf_reference(folder, out.prompt_token_ids, 12, repetition_penalty=1.8, eos_token_id=None)
    assert out.outputs[0].token_ids == expected != plain


def test_logprobs_are_the_models_raw_log_softmax(llm, folder) -> None:
    (out,) = llm.generate(
        PROMPTS[0], SamplingParams(temperature=0, max_tokens=5, logprobs=3, ignore_eos=True)
    )
    sample = out.outputs[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64)
    with torch.inference_mode():
        logits = model(torch.tensor([out.prompt_token_ids + sample.token_ids])).logits[0].float()
    total = 0.0
    for i, (token, entry) in enumerate(zip(sample.token_ids, sample.logprobs, strict=True)):
        expected = torch.log_softmax(logits[len(out.prompt_token_ids) - 1 + i], dim=-1)
        top = torch.topk(expected, 3)
        assert set(entry) == {token, *top.indices.tolist()}  # greedy: the token is the top one
        assert len(entry) == 3
        for t, value in entry.items():
            assert math.isclose(value, float(expected[t]), abs_tol=1e-5)
        total += entry[token]
    assert math.isclose(sample.cumulative_logprob, total, rel_tol=1e-9)
    (plain,) = llm.generate(PROMPTS[0], GREEDY)
    assert plain.outputs[0].logprobs is None and plain.outputs[0].cumulative_logprob is None


def test_seeded_sampling_is_reproducible(llm) -> None:
    def draw(seed: int | None) -> list[list[int]]:
        params = SamplingParams(
            temperature=1.0, top_p=0.9, top_k=50, min_p=0.01, seed=seed, n=3, max_tokens=8
        )
        return [s.token_ids for s in llm.generate(PROMPTS[0], params)[0].outputs]

    assert draw(7) == draw(7) != draw(8)
    assert len({tuple(s) for s in draw(7)}) > 1  # the n samples differ


def test_streaming_pieces_concatenate_to_the_final_text(llm) -> None:
    _, text = free_run(llm, PROMPTS[1])
    params = [
        SamplingParams(temperature=0, max_tokens=20, stop=text[9:12], ignore_eos=True),
        SamplingParams(temperature=0.9, seed=1, n=2, max_tokens=15, ignore_eos=True),
    ]
    prompts = [PROMPTS[1], PROMPTS[0]]
    final = {(i, s.index): s for i, o in enumerate(llm.generate(prompts, params)) for s in o.outputs}
    pieces: dict[tuple[int, int], list] = {}
    for piece in llm.stream(prompts, params):
        pieces.setdefault((piece.prompt_index, piece.index), []).append(piece)
    assert set(pieces) == set(final) == {(0, 0), (1, 0), (1, 1)}
    for key, sample in final.items():
        got = pieces[key]
        assert "".join(p.text for p in got) == sample.text
        assert [t for p in got for t in p.token_ids] == sample.token_ids
        assert [p.finish_reason for p in got] == [None] * (len(got) - 1) + [sample.finish_reason]
        assert len(got) > 3  # streamed, not delivered at the end
    assert final[(0, 0)].finish_reason == "stop"
    clean(llm)


def test_breaking_out_of_a_stream_aborts_its_requests(llm) -> None:
    for piece in llm.stream(PROMPTS, SamplingParams(temperature=0, max_tokens=20)):
        assert piece.text is not None
        break
    clean(llm)


def test_add_request_step_abort_loop(llm) -> None:
    first = llm.add_request(PROMPTS[0], SamplingParams(temperature=0, max_tokens=30, n=2, ignore_eos=True))
    second = llm.add_request(PROMPTS[1], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    seen = []
    for _ in range(3):
        seen += llm.step()
    assert {o.request_id for o in seen} == {first, second}
    held = llm.engine.block_manager.num_free_blocks
    aborted = llm.abort_request(first)
    assert aborted is not None and aborted.finished
    assert [s.finish_reason for s in aborted.outputs] == ["abort", "abort"]
    assert llm.engine.block_manager.num_free_blocks > held  # freed at once
    llm.engine.block_manager.check_invariants()
    assert llm.abort_request(first) is None
    finished = []
    while llm.has_unfinished_requests():
        finished += [o for o in llm.step() if o.finished]
    assert [o.request_id for o in finished] == [second]
    assert len(finished[0].outputs[0].token_ids) == 6
    clean(llm)


def test_timings_and_cached_prefix_tokens(llm) -> None:
    shared = "The block manager hands out fixed-size blocks of key and value slots."
    first, second = llm.generate([shared + " A", shared + " B"], SamplingParams(temperature=0, max_tokens=5))
    assert first.num_cached_tokens == 0
    prompt_ids = second.prompt_token_ids
    common = next(
        i for i, (a, b) in enumerate(zip(first.prompt_token_ids, prompt_ids, strict=True)) if a != b
    )
    assert second.num_cached_tokens == common // 4 * 4 > 0  # whole blocks of 4 only
    for output in (first, second):
        assert output.ttft is not None and output.ttft > 0
        assert output.tpot is not None and 0 < output.tpot < 10


def test_import_pagedkv_does_not_import_torch() -> None:
    code = "import sys, pagedkv; print('torch' in sys.modules); pagedkv.SamplingParams(n=2); "
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert pagedkv.LLM is LLM and pagedkv.SamplingParams is SamplingParams
