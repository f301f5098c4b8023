"""Reading the published sets through Hugging Face datasets, from files in their own
formats made here: every format gives the same rows, the hub cache is found without a
network, and the windows are the GPTQ code's."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("datasets")

from qbayes.collect import corpora, protocol, texts  # noqa: E402
from qbayes.collect.corpora import TextFile  # noqa: E402
from qbayes.errors import QBayesError  # noqa: E402

from collect_support import wikitext_raw, wikitext_rows, write_jsonl, write_parquet  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from qbayes.collect.toymodels import build_tokenizer

    return build_tokenizer(texts.load_text("shakespeare", "train")[:200_000], 512)


@pytest.fixture(scope="module")
def wiki_rows():
    return wikitext_rows(texts.load_text("bible", "eval")[:20_000])


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    """An empty hub cache and datasets cache for every test: nothing found by chance."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    protocol.load_rows.cache_clear()


def test_wikitext_formats_read_alike(tmp_path, wiki_rows):
    import datasets

    parquet = write_parquet(tmp_path / "test.parquet", "text", wiki_rows)
    jsonl = write_jsonl(tmp_path / "test.jsonl", [{"text": r} for r in wiki_rows])
    gz = write_jsonl(tmp_path / "test.json.gz", [{"text": r} for r in wiki_rows])
    raw = tmp_path / "wiki.test.raw"
    raw.write_text(wikitext_raw(wiki_rows), encoding="utf-8")
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_dict({"text": wiki_rows}),
            "train": datasets.Dataset.from_dict({"text": ["other"]}),
        }
    ).save_to_disk(str(saved))
    got = {p.name: corpora.read_rows(TextFile("eval", "wikitext2", p)).all() for p in (parquet, jsonl, gz, raw, saved)}
    assert all(rows == wiki_rows for rows in got.values()), {k: len(v) for k, v in got.items()}
    assert "" in wiki_rows and any(r.endswith("\n") for r in wiki_rows)  # blank rows and kept newlines


def test_ptb_sentences_are_stripped_lines(tmp_path):
    lines = [" the cat sat on the mat ", " <unk> shares rose N % "]
    txt = tmp_path / "ptb.valid.txt"
    txt.write_text("\n".join(lines) + "\n")
    parquet = write_parquet(tmp_path / "validation.parquet", "sentence", [s.strip() for s in lines])
    for path in (txt, parquet):
        assert corpora.read_rows(TextFile("eval", "ptb", path)).all() == [s.strip() for s in lines]


def test_contiguous_windows_cover_the_joined_text(tmp_path, tokenizer, wiki_rows):
    f = TextFile("eval", "wikitext2", write_parquet(tmp_path / "t.parquet", "text", wiki_rows))
    w = protocol.windows(tokenizer, "wikitext2", "eval", seq_len=64, count=None, files=[f])
    ids = tokenizer("\n\n".join(wiki_rows))["input_ids"]
    assert w.shape == (len(ids) // 64, 64) and w.flatten().tolist() == ids[: w.numel()]
    assert protocol.windows(tokenizer, "wikitext2", "eval", seq_len=64, count=3, files=[f]).tolist() == w[:3].tolist()


def test_c4_windows_are_the_gptq_draws(tmp_path, tokenizer):
    docs = [texts.load_text("bible", "eval")[i * 900 : (i + 1) * 900 * (1 + i % 3)] for i in range(40)]
    f = TextFile(
        "eval",
        "c4",
        write_jsonl(
            tmp_path / "c4-validation.00000-of-00008.json.gz",
            [{"text": d, "timestamp": "2019", "url": "u"} for d in docs],
        ),
    )
    seq_len, n = 128, 12
    got = protocol.windows(tokenizer, "c4", "eval", seq_len=seq_len, count=n, seed=7, files=[f])
    # GPTQ's get_c4 validation loop (seed 0, whatever the run's seed)
    random.seed(0)
    expected = []
    for _ in range(n):
        while True:
            i = random.randint(0, len(docs) - 1)
            ids = tokenizer(docs[i])["input_ids"]
            if len(ids) >= seq_len:
                break
        j = random.randint(0, len(ids) - seq_len - 1)
        expected.append(ids[j : j + seq_len])
    assert got.tolist() == expected
    calib = protocol.windows(
        tokenizer, "c4", "calib", seq_len=seq_len, count=4, seed=7, files=[TextFile("calib", "c4", f.path)]
    )
    assert calib.shape == (4, seq_len) and calib.tolist() != got[:4].tolist()  # the run's seed, not 0


def test_no_document_long_enough_is_a_clear_error(tmp_path, tokenizer):
    f = TextFile("eval", "c4", write_jsonl(tmp_path / "short.jsonl", [{"text": "a few words"}] * 5))
    with pytest.raises(QBayesError, match="none of its 5 documents is longer than 128 tokens"):
        protocol.windows(tokenizer, "c4", "eval", seq_len=128, count=None, files=[f])


def test_hub_cache_is_found_offline_and_a_missing_file_is_named(tmp_path, wiki_rows):
    from huggingface_hub import constants

    hub = corpora.CORPORA["wikitext2"].hub_file("eval")
    with pytest.raises(
        QBayesError,
        match="hf://datasets/Salesforce/wikitext/wikitext-2-raw-v1/test-00000-of-00001"
        r"\.parquet is not in the local Hugging Face cache",
    ):
        corpora.hub_path(hub, download=False)
    # the layout huggingface_hub (and datasets.load_dataset) leave in the cache
    repo = tmp_path / "hub" / "datasets--Salesforce--wikitext"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit / "wikitext-2-raw-v1"
    snap.mkdir(parents=True)
    write_parquet(snap / "test-00000-of-00001.parquet", "text", wiki_rows)
    assert constants.HF_HUB_CACHE == str(tmp_path / "hub")
    path = corpora.hub_path(hub, download=False)
    assert path == snap / "test-00000-of-00001.parquet"
    text = protocol.text_file("wikitext2", "eval")
    assert text.origin == hub.describe() and corpora.read_rows(text).all() == wiki_rows


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"PAR1 this is not parquet", "cannot be read as a parquet dataset"),
    ],
)
def test_unreadable_files_are_named(tmp_path, content, message):
    bad = tmp_path / "test.parquet"
    bad.write_bytes(content)
    with pytest.raises(QBayesError, match=message) as err:
        corpora.read_rows(TextFile("eval", "wikitext2", bad))
    assert str(bad) in str(err.value)


def test_blank_text_and_wrong_columns_are_refused(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\n")
    with pytest.raises(QBayesError, match=r"holds no text \(3 empty rows\)"):
        corpora.read_rows(TextFile("eval", "wikitext2", blank))
    two = write_jsonl(tmp_path / "two.jsonl", [{"title": "a", "body": "b"}])
    with pytest.raises(QBayesError, match=r"no text column 'text' \(columns: title, body\)"):
        corpora.read_rows(TextFile("eval", "wikitext2", two))


def test_overlap_finds_shared_passages():
    a = ["a line long enough to identify a passage of the evaluation text, surely", "short"]
    assert corpora.overlap(a, ["unrelated text that is also quite long, more than sixty-four chars"]) == (0, None)
    shared, example = corpora.overlap(a, ["x\n" + a[0] + "  \n", "short"])
    assert shared == 1 and example == a[0][:60]
