"""Replay tiles of a fine-tuning (segcore.training.replay): which folder, when it is skipped and
why, and what is refused."""

from __future__ import annotations

import json

import pytest

from segcore.errors import ConfigError, DatasetError
from segcore.paths import REPO_ROOT
from segcore.training.config import REPLAY_START, TrainConfig
from segcore.training.recipes import resolve_paths
from segcore.training.replay import planned_crops, resolve_replay
from tests.conftest import make_pairs_dataset


def card_bundle(folder, data):
    """A bundle folder holding the default's card with ``training.data`` = ``data``."""
    card = json.loads((REPO_ROOT / "weights" / "default" / "card.json").read_text())
    card["training"] = {**card["training"], "data": data}
    folder.mkdir(parents=True)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_the_config_refuses_a_share_without_tiles_and_shares_out_of_range():
    with pytest.raises(ConfigError, match="replay_fraction needs replay_data"):
        TrainConfig(replay_fraction=0.5)
    for share in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"replay_fraction must be in \[0, 1\)"):
            TrainConfig(replay_data="x", replay_fraction=share)
    assert TrainConfig(replay_data="x").replay_fraction == 0


def test_no_replay_asked_is_no_replay(tmp_path):
    own = make_pairs_dataset(tmp_path / "own", n=3)
    for config in (TrainConfig(data=str(own)), TrainConfig(replay_data=str(own))):
        replay = resolve_replay(config, own)
        assert replay.samples is None and replay.fraction == 0 and replay.record == {}
        assert replay.crops_per_epoch == config.crops_per_epoch


def test_a_named_folder_gives_its_training_tiles(tmp_path):
    own = make_pairs_dataset(tmp_path / "own", n=3)
    other = make_pairs_dataset(tmp_path / "other", n=5, seed=1)
    config = TrainConfig(data=str(own), replay_data=str(other), replay_fraction=0.4, seed=2)
    replay = resolve_replay(config, own)
    assert replay.fraction == 0.4
    assert replay.record == {"data": str(other), "images": len(replay.samples), "fraction": 0.4}
    assert 0 < len(replay.samples) <= 5  # its train split (val and test carved as usual)
    with pytest.raises(DatasetError, match="missing"):
        resolve_replay(
            TrainConfig(data=str(own), replay_data=str(tmp_path / "missing"), replay_fraction=0.4),
            own,
        )


def test_tiles_of_another_scale_are_refused_by_name(tmp_path):
    own = make_pairs_dataset(tmp_path / "own", n=3)
    other = make_pairs_dataset(tmp_path / "other", n=3)
    (own / "dataset.json").write_text('{"pixel_size": 0.25}')
    (other / "dataset.json").write_text('{"pixel_size": 0.5}')
    config = TrainConfig(data=str(own), replay_data=str(other), replay_fraction=0.5)
    with pytest.raises(ConfigError, match=rf"{other}: its tiles are at 0.5 µm/px .* 0.25 µm/px"):
        resolve_replay(config, own)
    (other / "dataset.json").write_text('{"pixel_size": 0.26}')  # within 10 %: the same scale
    assert resolve_replay(config, own).samples is not None


def test_init_from_replays_the_starting_models_data_when_this_machine_has_it(tmp_path):
    own = make_pairs_dataset(tmp_path / "own", n=3)
    start_data = make_pairs_dataset(tmp_path / "start-data", n=4)
    present = card_bundle(tmp_path / "present", str(start_data))
    config = TrainConfig(
        data=str(own), init_from=str(present), replay_data=REPLAY_START, replay_fraction=0.5
    )
    replay = resolve_replay(config, own)
    assert replay.record["data"] == str(start_data) and replay.samples is not None
    # A card whose training data is elsewhere: the run trains on its own tiles and says why.
    absent = card_bundle(tmp_path / "absent", "../not/here/monuseg")
    replay = resolve_replay(
        TrainConfig(
            data=str(own), init_from=str(absent), replay_data=REPLAY_START, replay_fraction=0.5
        ),
        own,
    )
    assert replay.samples is None and replay.fraction == 0
    assert replay.record == {
        "skipped": f"the training data of {absent} (../not/here/monuseg) is not on this machine",
        "crops_per_epoch": None,  # one crop per tile's worth: nothing to scale
    }
    # Without its replay tiles a run draws its own share of the crops: the lab's tiles weigh
    # as much as with replay, and the run is shorter.
    short = resolve_replay(
        TrainConfig(
            data=str(own),
            init_from=str(absent),
            replay_data=REPLAY_START,
            replay_fraction=0.5,
            crops_per_epoch=320,
        ),
        own,
    )
    assert short.crops_per_epoch == 160 and short.record["crops_per_epoch"] == 160
    kept = TrainConfig(
        data=str(own),
        init_from=str(present),
        replay_data=REPLAY_START,
        replay_fraction=0.5,
        crops_per_epoch=320,
    )
    assert resolve_replay(kept, own).crops_per_epoch == 320
    with pytest.raises(ConfigError, match="needs a starting bundle"):
        resolve_replay(TrainConfig(replay_data=REPLAY_START, replay_fraction=0.5), own)


def test_a_recipe_resolves_a_replay_folder_but_keeps_the_keyword(tmp_path):
    named = resolve_paths(TrainConfig(replay_data="data/start", replay_fraction=0.5), tmp_path)
    assert named.replay_data == str(tmp_path / "data" / "start")
    keyword = resolve_paths(TrainConfig(replay_data=REPLAY_START, replay_fraction=0.5), tmp_path)
    assert keyword.replay_data == REPLAY_START


def test_the_planned_crops_say_beforehand_what_the_run_will_draw(tmp_path):
    start_data = make_pairs_dataset(tmp_path / "start-data", n=4)
    present = card_bundle(tmp_path / "present", str(start_data))
    absent = card_bundle(tmp_path / "absent", "../not/here/monuseg")

    def crops(**fields):
        return planned_crops(TrainConfig(crops_per_epoch=320, **fields))

    assert crops() == 320
    replay = {"replay_data": REPLAY_START, "replay_fraction": 0.5}
    assert crops(init_from=str(present), **replay) == 320
    assert crops(init_from=str(absent), **replay) == 160
    assert crops(init_from=str(tmp_path / "no-bundle"), **replay) == 320  # the run will say
    assert crops(replay_data=str(start_data), replay_fraction=0.5) == 320


def carved_bundle(folder, data, *, carve_seed, training_seed):
    """A bundle card of a run on ``data`` whose val split was carved by ``carve_seed`` while its
    training record says ``training_seed`` (as v4's experiment script recorded its crop seed)."""
    from segcore.data.datasets import open_dataset

    folder = card_bundle(folder, str(data))
    card = json.loads((folder / "card.json").read_text())
    card["dataset"] = {**open_dataset(data, seed=carve_seed).summary(), "data": str(data)}
    card["training"] = {**card["training"], "seed": training_seed}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_a_fine_tuning_on_the_starts_own_data_must_carve_it_as_the_start_did(tmp_path):
    from segcore.bundles.store import read_card
    from segcore.data.datasets import open_dataset
    from segcore.training.replay import check_start_carve, start_carving

    data = make_pairs_dataset(tmp_path / "monuseg", n=10)
    start = carved_bundle(tmp_path / "start", data, carve_seed=1, training_seed=11)
    assert start_carving(read_card(start))["seed"] == 1  # the carve's seed, not the crops'

    def config(seed, on=data):
        return TrainConfig(data=str(on), init_from=str(start), seed=seed)

    seed_1, seed_11 = open_dataset(data, seed=1), open_dataset(data, seed=11)
    assert set(seed_1.val.ids) != set(seed_11.val.ids)  # the two carves differ
    with pytest.raises(ConfigError, match=r"carved by seed 1; .* with seed 11.*set \"seed\": 1"):
        check_start_carve(config(11), seed_11)
    check_start_carve(config(1), seed_1)  # the start's carve: its validation tiles stay out
    other = make_pairs_dataset(tmp_path / "lab", n=10)
    check_start_carve(config(11, other), open_dataset(other, seed=11))  # other data: no check
    # The same folder found by name and sizes when the card's path was relative elsewhere.
    card = json.loads((start / "card.json").read_text())
    card["dataset"]["root"] = "../elsewhere/monuseg"
    (start / "card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="seed 1"):
        check_start_carve(config(11), seed_11)
    # Replaying the start's tiles carves them as the start did, too.
    replay = resolve_replay(
        TrainConfig(
            data=str(other),
            init_from=str(start),
            replay_data=REPLAY_START,
            replay_fraction=0.5,
            seed=11,
        ),
        other,
    )
    assert sorted(replay.samples.ids) == sorted(seed_1.train.ids)


def test_the_trainer_and_the_launcher_refuse_the_other_carve_before_making_anything(tmp_path):
    from segcore.training.jobs import check_dataset
    from segcore.training.trainer import train

    data = make_pairs_dataset(tmp_path / "monuseg", n=10)
    start = carved_bundle(tmp_path / "start", data, carve_seed=1, training_seed=1)
    config = TrainConfig(data=str(data), init_from=str(start), seed=2)
    with pytest.raises(ConfigError, match='set "seed": 1'):
        check_dataset(config.to_dict())
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match='set "seed": 1'):
        train(config, runs_dir=runs)
    assert not runs.exists() or not any(runs.iterdir())
