"""hitlseg.retrieval: descriptors, hashing, the index (search, updates, folder), evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.retrieval import (Describer, DeepHashConfig, DeepHasher, ITQHasher, LSHHasher, RetrievalIndex,
                               add_dataset, index_dataset, similar_images)
from hitlseg.retrieval import evaluate as E
from hitlseg.retrieval import labels as L


@pytest.fixture(scope="module")
def flim_state():
    """A FLIM model state fitted on robot markers of 3 demo images."""
    from hitlseg.datasets import demo
    from hitlseg.flim.model import FLIMModel
    from hitlseg.robot import markers_from_mask

    dataset = demo()
    loaded = [dataset.load(i) for i in dataset.ids[:3]]
    markers = [markers_from_mask(s.mask, rng=np.random.default_rng(i)) for i, s in enumerate(loaded)]
    return FLIMModel.fit([s.image for s in loaded], markers, seed=0).to_state()


@pytest.fixture(scope="module")
def demo_pool():
    from hitlseg.datasets import demo

    dataset = demo()
    return dataset, dataset.ids[:20]


def clustered(n=60, d=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (3, d))
    groups = rng.integers(0, 3, n)
    return (centres[groups] + rng.normal(0, 1, (n, d))).astype(np.float32), groups


# -- descriptors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gtfree", "flim"])
def test_descriptors_of_demo_images(flim_state, demo_pool, kind):
    dataset, ids = demo_pool
    describer = Describer.from_state(kind, flim_state)
    image = dataset.image(ids[0])[0]
    vector = describer.describe(image)
    assert vector.shape == (describer.dimension,) and np.all(np.isfinite(vector)) and vector.any()
    np.testing.assert_array_equal(vector, describer.describe(image))  # deterministic
    mask = dataset.mask(ids[0]) == 2  # the nucleus
    region = describer.describe(image, mask)
    assert region.shape == vector.shape and not np.allclose(region, vector)
    if kind == "flim":  # pooled inside the region = the mean of the features at the region's grid points
        from hitlseg.flim.model import FLIMModel

        from hitlseg.selection import labels_at

        features = FLIMModel.from_state(flim_state).features(image).numpy()
        inside = labels_at(mask, features.shape[1:])  # the mask at the feature grid (nearest neighbour)
        np.testing.assert_allclose(region, features[:, inside].mean(1), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(vector, features.reshape(len(features), -1).mean(1), rtol=1e-4, atol=1e-6)
    else:  # profiles are sorted non-increasing within each map, zero-filled
        profiles = vector.reshape(-1, describer.options["length"])
        assert np.all(np.diff(profiles, axis=1) <= 1e-6)


def test_describer_refuses_bad_input(flim_state):
    describer = Describer.from_state("flim", flim_state)
    with pytest.raises(InputError, match="has 1 channels.*3-channel"):
        describer.describe(np.zeros((1, 32, 32), np.float32))
    with pytest.raises(InputError, match="2D images"):
        describer.describe(np.zeros((3, 8, 32, 32), np.float32))
    with pytest.raises(InputError, match="region mask is empty"):
        describer.describe(np.zeros((3, 32, 32), np.float32), np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match="shape"):
        describer.describe(np.zeros((3, 32, 32), np.float32), np.ones((16, 16), np.uint8))
    with pytest.raises(InputError, match="'encoder' needs a segmentation network"):
        Describer.from_state("encoder", flim_state)
    with pytest.raises(InputError, match="not a hitlseg FLIM model"):
        Describer.from_state("flim", {"format": "something else"})


# -- hashing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda s: LSHHasher(32, s), lambda s: ITQHasher(16, s),
                                  lambda s: DeepHasher(16, s, DeepHashConfig(epochs=30, hidden=32))])
def test_codes_are_deterministic_for_a_seed(make):
    x, groups = clustered()
    labels = np.eye(3, dtype=np.float32)[groups]
    first = make(0).fit(x, labels).encode(x)
    again = make(0).fit(x, labels).encode(x)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.uint8 and first.shape[0] == len(x)
    other = make(1).fit(x, labels).encode(x)
    assert not np.array_equal(first, other)


def test_itq_keeps_neighbours_better_than_chance_and_refuses_too_many_bits():
    x, groups = clustered()
    codes = ITQHasher(16).fit(x).encode(x)
    bits = np.unpackbits(codes, axis=1).astype(int)
    hamming = (bits[:, None] != bits[None]).sum(2)
    same = groups[:, None] == groups[None]
    assert hamming[same].mean() < 0.5 * hamming[~same].mean()
    with pytest.raises(InputError, match="bits <= the descriptor dimension"):
        ITQHasher(32).fit(x)
    with pytest.raises(InputError, match="multiple of 8"):
        LSHHasher(12)


def test_deep_hash_learns_a_planted_relation():
    """Labels depend on two hidden directions buried in noise: the learned codes rank images that
    share labels first, far better than chance and than LSH of the same length."""
    rng = np.random.default_rng(0)
    n, d = 160, 40
    x = rng.normal(0, 1, (n, d)).astype(np.float32)
    labels = np.stack([x[:, 0] > 0, x[:, 1] > 0.3], axis=1).astype(np.float32)
    x[:, 2:] *= 3  # the relevant directions are a small part of the variance
    train, test = np.arange(120), np.arange(120, n)
    deep = DeepHasher(16, 0, DeepHashConfig(epochs=200)).fit(x[train], labels[train])
    # relevance: number of labels (positive or negative) shared
    relevance = (labels[test][:, None] == labels[train][None]).sum(2)
    scores = {}
    for name, hasher in (("deep", deep), ("lsh", LSHHasher(16, 0).fit(x[train]))):
        index = RetrievalIndex.build([str(i) for i in train], x[train], bits=16, hash=name,
                                     labels=labels[train] if name == "deep" else None, seed=0)
        rankings = E.ranking_of(index, x[test], 10)
        scores[name] = E.ndcg_at_k(rankings, relevance, 10)
    chance = []
    for seed in range(5):
        random = np.stack([np.random.default_rng(seed).permutation(len(train))[:10] for _ in test])
        chance.append(E.ndcg_at_k(random, relevance, 10))
    assert scores["deep"] > np.mean(chance) + 0.1, (scores, np.mean(chance))
    assert scores["deep"] > scores["lsh"], scores


def test_deep_hash_needs_labels():
    x, _ = clustered(10)
    with pytest.raises(InputError, match="learns from labels"):
        DeepHasher(8).fit(x, None)
    with pytest.raises(InputError, match="no image has a label"):
        DeepHasher(8).fit(x, np.zeros((10, 2)))


# -- index ------------------------------------------------------------------------------------------


def test_exact_search_equals_brute_force_numpy():
    rng = np.random.default_rng(3)
    x, q = rng.random((50, 12), dtype=np.float32), rng.random((5, 12), dtype=np.float32)
    index = RetrievalIndex.build([f"i{r}" for r in range(50)], x)
    distances = np.sqrt(((q[:, None] - x[None]) ** 2).sum(2))
    for row, hits in enumerate(index.search(q, 7)):
        expected = np.argsort(distances[row])[:7]
        assert [h[0] for h in hits] == [f"i{r}" for r in expected]
        np.testing.assert_allclose([h[1] for h in hits], distances[row, expected], rtol=1e-4)
    codes = LSHHasher(16).fit(x).encode(x)
    binary = RetrievalIndex.build([f"i{r}" for r in range(50)], x, bits=16, hash="lsh")
    bits = np.unpackbits(codes, axis=1)
    hits = binary.search(x[4], 50)[0]
    hamming = (bits != bits[4]).sum(1)
    assert [d for _, d in hits] == sorted(hamming.tolist())
    assert {i for i, d in hits if d == 0} == {f"i{r}" for r in np.flatnonzero(hamming == 0)}


@pytest.mark.parametrize("bits,hash,search", [(0, None, "exact"), (0, None, "ivf"), (16, "lsh", "exact"),
                                              (16, "itq", "ivf"), (16, "deep", "exact")])
def test_update_equals_rebuild(tmp_path, bits, hash, search):
    x, groups = clustered(60)
    labels = np.eye(3, dtype=np.float32)[groups]
    ids = [f"img{r:02d}" for r in range(60)]
    options = dict(bits=bits, hash=hash or "lsh", search=search, seed=0, deep_config=DeepHashConfig(epochs=20, hidden=16))
    built = RetrievalIndex.build(ids[:40], x[:40], labels=labels[:40] if hash == "deep" else None, **options)
    built.save(tmp_path / "a")
    updated = RetrievalIndex.load(tmp_path / "a").add(ids[40:], x[40:])
    rebuilt = RetrievalIndex.build(ids, x, fit=40, labels=labels[:40] if hash == "deep" else None, **options)
    assert updated.ids == rebuilt.ids
    np.testing.assert_array_equal(updated.vectors, rebuilt.vectors)
    if bits:
        np.testing.assert_array_equal(updated.codes, rebuilt.codes)
    assert updated.search(x[::7], 8) == rebuilt.search(x[::7], 8)
    updated.save(tmp_path / "b")
    assert RetrievalIndex.load(tmp_path / "b").search(x[::7], 8) == rebuilt.search(x[::7], 8)
    with pytest.raises(InputError, match="already in the index"):
        updated.add(ids[:2], x[:2])


def test_index_folder_round_trip_and_similar_images(tmp_path, flim_state, demo_pool):
    dataset, ids = demo_pool
    describer = Describer.from_state("gtfree", flim_state)
    index = index_dataset(dataset, ids[:16], describer, bits=16, hash="itq")
    index.save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "meta.json").read_text())
    assert meta["descriptor"] == "gtfree" and meta["encoder_digest"] == describer.digest
    assert meta["dimension"] == describer.dimension and meta["count"] == 16 and meta["bits"] == 16
    loaded = RetrievalIndex.load(tmp_path / "index")
    hits = similar_images(loaded, ids[3], 5)
    assert hits[0] == {"rank": 1, "id": ids[3], "distance": 0.0} and len(hits) == 5
    image = dataset.image(ids[3])[0]
    assert similar_images(loaded, image, 5, query_id=ids[3])[0]["id"] == ids[3]
    # incremental update from the dataset equals describing all at once
    added = add_dataset(loaded, dataset.subset(ids))
    assert added == ids[16:]
    full = RetrievalIndex.build(ids, index_dataset(dataset, ids, describer).vectors, bits=16, hash="itq", fit=16)
    np.testing.assert_array_equal(loaded.vectors, full.vectors)
    np.testing.assert_array_equal(loaded.codes, full.codes)
    region = similar_images(loaded, image, 3, mask=dataset.mask(ids[3]) > 0)
    assert len(region) == 3


def test_index_refuses_bad_input(tmp_path, flim_state):
    x, _ = clustered(20)
    with pytest.raises(InputError, match="pool is empty"):
        RetrievalIndex.build([], np.zeros((0, 4)))
    index = RetrievalIndex.build([f"i{r}" for r in range(20)], x)
    with pytest.raises(InputError, match="k: must be a positive integer"):
        index.search(x[0], 0)
    with pytest.raises(InputError, match="dimension 5"):
        index.search(np.zeros(5), 3)
    with pytest.raises(InputError, match="not in the index"):
        index.search_id("nope", 3)
    gtfree = Describer.from_state("gtfree", flim_state)
    flim = Describer.from_state("flim", flim_state)
    built = RetrievalIndex.build(["a", "b", "c"], np.ones((3, flim.dimension), np.float32), describer=flim)
    with pytest.raises(InputError, match="built with descriptor 'flim', not 'gtfree'"):
        built.check_signature(gtfree)
    import copy

    other_state = copy.deepcopy(flim_state)  # another encoder: the same weights, slightly changed
    other_state["encoder"]["layers"][0]["weight"] = other_state["encoder"]["layers"][0]["weight"] * 1.01
    with pytest.raises(InputError, match="another encoder"):
        built.check_signature(Describer.from_state("flim", other_state))
    with pytest.raises(InputError, match="has 1 channels"):
        similar_images(built, np.zeros((1, 40, 40), np.float32), 2)


@pytest.mark.parametrize("damage", ["meta", "vectors", "faiss", "missing", "count"])
def test_corrupt_index_folder(tmp_path, damage):
    x, _ = clustered(20)
    folder = RetrievalIndex.build([f"i{r}" for r in range(20)], x, bits=16, hash="lsh").save(tmp_path / "index")
    if damage == "meta":
        (folder / "meta.json").write_text("{not json")
    elif damage == "vectors":
        np.save(folder / "vectors.npy", np.zeros((3, 2), np.float32))
    elif damage == "faiss":
        (folder / "index.faiss").write_bytes(b"garbage")
    elif damage == "missing":
        (folder / "codes.npy").unlink()
    else:
        (folder / "ids.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(InputError, match="corrupt retrieval index"):
        RetrievalIndex.load(folder)
    with pytest.raises(InputError, match="not found"):
        RetrievalIndex.load(tmp_path / "absent")


def test_save_refuses_to_replace_a_foreign_folder(tmp_path):
    x, _ = clustered(10)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="not a retrieval index"):
        RetrievalIndex.build([f"i{r}" for r in range(10)], x).save(tmp_path / "data")
    assert (tmp_path / "data" / "keep.txt").read_text() == "precious"


# -- evaluation -------------------------------------------------------------------------------------


def test_map_and_ndcg_against_a_hand_computed_ranking():
    # one query, database of 5; relevance levels of the database images
    relevance = np.array([[2, 0, 1, 0, 1]])
    ranking = np.array([[1, 0, 3, 2, 4]])  # retrieved levels: 0, 2, 0, 1, 1
    # relevant at ranks 2, 4, 5: precisions 1/2, 2/4, 3/5 -> AP@5 = (0.5 + 0.5 + 0.6) / 3
    assert E.mean_average_precision(ranking, relevance, 5) == pytest.approx((0.5 + 0.5 + 0.6) / 3)
    # AP@3: only rank 2 relevant among the first 3 -> 1/2
    assert E.mean_average_precision(ranking, relevance, 3) == pytest.approx(0.5)
    # DCG@3 = (2^0-1)/1 + (2^2-1)/log2(3) + 0 ; ideal levels 2, 1, 1: 3/1 + 1/log2(3) + 1/2
    dcg = 3 / np.log2(3)
    ideal = 3 + 1 / np.log2(3) + 1 / 2
    assert E.ndcg_at_k(ranking, relevance, 3) == pytest.approx(dcg / ideal)
    assert E.ndcg_at_k(np.array([[0, 2, 4, 1, 3]]), relevance, 5) == pytest.approx(1.0)
    pr = E.precision_recall(ranking, relevance, [1, 2, 5])
    assert pr["precision"] == pytest.approx([0.0, 0.5, 0.6]) and pr["recall"] == pytest.approx([0, 1 / 3, 1])
    with pytest.raises(InputError, match="k: must be a positive integer"):
        E.mean_average_precision(ranking, relevance, 0)


def test_area_labels_and_relevance():
    small, large = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    small[:2, :2] = 1
    large[:8, :8] = 1
    large[0, 0] = 2
    masks = {"s": small, "l": large, "m": np.pad(np.ones((4, 4), np.uint8), 3)}
    table, edges = L.area_labels(masks, 2, levels=3)
    assert edges.shape == (2, 2)
    rows = {i: {t for t, v in zip(table.tokens, r) if v} for i, r in zip(table.ids, table.matrix)}
    assert rows["s"] == {"1@1"} and rows["m"] == {"1@2"} and rows["l"] == {"1@3", "2@3"}
    relevance = E.relevance_matrix(table.matrix, table.matrix)
    assert relevance.tolist() == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    markers = L.marker_labels({"a": np.array([[0, 1, 3]]), "b": np.array([[2, 1, 0]])})
    assert markers.tokens == ["1", "2"] and markers.matrix.tolist() == [[0, 1], [1, 0]]


def test_label_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,class\na,benign\nb,malignant\nc,benign\n")
    table = L.image_labels(L.read_label_csv(path))
    assert table.tokens == ["benign", "malignant"] and table.rows(["c", "b"]).tolist() == [[1, 0], [0, 1]]
    (tmp_path / "bad.csv").write_text("name,grade\na,1\n")
    with pytest.raises(InputError, match="needs columns 'id' and 'class'"):
        L.read_label_csv(tmp_path / "bad.csv")


def test_encoder_descriptor_of_segmentation_models(flim_state, demo_pool):
    from hitlseg.flim.model import FLIMModel
    from hitlseg.nets import SegModel

    dataset, ids = demo_pool
    image = dataset.image(ids[0])[0]
    sunet = SegModel.sunet(FLIMModel.from_state(flim_state).encoder, 2).to_state()
    pooled = Describer.from_state("encoder", sunet).describe(image)
    # the sU-Net's frozen encoder is the FLIM model's: the same pooled features, the same digest
    np.testing.assert_allclose(pooled, Describer.from_state("flim", flim_state).describe(image), rtol=1e-5)
    assert Describer.from_state("encoder", sunet).digest == Describer.from_state("flim", flim_state).digest
    unet = SegModel.unet(3, 2, seed=0).to_state()
    vector = Describer.from_state("encoder", unet).describe(image)
    assert vector.shape == (64,) and np.all(np.isfinite(vector))
    with pytest.raises(InputError, match="needs FLIM filters"):
        Describer.from_state("gtfree", unet)
