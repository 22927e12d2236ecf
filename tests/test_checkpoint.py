"""Tests of radref.training.checkpoint: round trip, every kind of damaged or foreign file
(always CheckpointError with a clear message), and atomic saving."""
import json
import os

import numpy as np
import pytest

from helpers import checkpoint_arrays, forge_checkpoint
from radref.training import checkpoint
from radref.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from radref.core.flow import FlowConfig, flow_init
from radref.training.optim import adam_init

HYPER = {"n_layers": 2, "hidden": 3, "gate_hidden": 3, "out_std": 0.01, "random_state": 0,
         "dim": 2}


def _state(seed=0):
    """Flow parameters and a non-trivial Adam state (random moments, t = 17)."""
    rng = np.random.default_rng(seed)
    params = flow_init(FlowConfig("rad", 2, 2, 3, 3), out_std=0.5, random_state=rng)
    for value in params.values():
        value += rng.standard_normal(value.shape)
    adam = adam_init(params)
    adam["t"] = 17
    for name in params:
        adam["m"][name][...] = rng.standard_normal(params[name].shape)
        adam["v"][name][...] = rng.random(params[name].shape)
    return params, adam


def _save(path, **kwargs):
    params, adam = _state()
    args = dict(model="RadFlow", hyperparameters=HYPER, params=params, adam_state=adam,
                step=17, extra={"history": {"loglik": [-2.5, -2.25]}, "batch_size": 100})
    args.update(kwargs)
    save_checkpoint(path, **args)
    return args


def _tmp_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


# ------------------------------------------------------------------ round trip

def test_round_trip(tmp_path):
    path = tmp_path / "ck.npz"
    args = _save(path)
    meta, params, adam = load_checkpoint(path)
    assert list(params) == list(args["params"])  # names kept in order
    for name, value in args["params"].items():
        assert params[name].dtype == np.float64
        assert params[name].tobytes() == value.tobytes(), name
    assert adam["t"] == 17
    for key in ("m", "v"):
        assert list(adam[key]) == list(args["params"])
        for name, value in args["adam_state"][key].items():
            assert adam[key][name].tobytes() == value.tobytes(), (key, name)
    assert meta["format"] == "radref-checkpoint" and meta["version"] == checkpoint.VERSION
    assert meta["model"] == "RadFlow"
    assert meta["hyperparameters"] == HYPER
    assert meta["step"] == 17 and meta["adam_t"] == 17
    assert meta["names"] == list(args["params"])
    assert meta["extra"] == args["extra"]
    assert "checksum" not in meta
    # expected_model that matches is fine; str and PathLike paths both work
    load_checkpoint(str(path), expected_model="RadFlow")


def test_round_trip_without_adam_state(tmp_path):
    path = tmp_path / "ck.npz"
    _save(path, adam_state=None, extra=None)
    meta, params, adam = load_checkpoint(path)
    assert adam is None and meta["adam_t"] is None and meta["extra"] == {}
    assert len(params) == len(_state()[0])


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "ck.npz"
    _save(path, step=1)
    _save(path, step=2)
    assert load_checkpoint(path)[0]["step"] == 2
    assert _tmp_files(tmp_path) == []


# -------------------------------------------------------------- damaged files

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    _save(path)
    with open(path, "rb") as f:
        return path, f.read()


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("keep", [0, 1, 4, 30, 0.25, 0.5, 0.9, -22, -1])
def test_truncated_file(saved, tmp_path, keep):
    _, data = saved
    n = int(keep * len(data)) if isinstance(keep, float) else keep % len(data) if keep < 0 else keep
    bad = tmp_path / "truncated.npz"
    _write_bytes(bad, data[:n])
    with pytest.raises(CheckpointError, match="truncated.npz: not a readable radref checkpoint"):
        load_checkpoint(bad)


def test_flipped_byte_in_the_middle(saved, tmp_path):
    _, data = saved
    bad = tmp_path / "flipped.npz"
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    _write_bytes(bad, bytes(corrupted))
    with pytest.raises(CheckpointError, match="flipped.npz: .*(corrupted|not a readable)"):
        load_checkpoint(bad)


def test_flipped_bytes_in_zip_headers(saved, tmp_path):
    # Regression: flips in the zip central directory (compression method,
    # version needed, flag bits) raised NotImplementedError / RuntimeError.
    # Every single-byte change must give CheckpointError or, where zipfile
    # ignores the field (timestamps, attributes), the unchanged content.
    path, data = saved
    meta0, params0, adam0 = load_checkpoint(path)
    central = data.find(b"PK\x01\x02")
    end = data.rfind(b"PK\x05\x06")
    assert 0 < central < end
    positions = (list(range(0, 80)) + list(range(central, central + 80))
                 + list(range(end, len(data))))
    bad = tmp_path / "flipped.npz"
    outcomes = {"error": 0, "same": 0}
    for i in positions:
        for mask in (0x01, 0x08, 0x20, 0x40, 0xFF):
            corrupted = bytearray(data)
            corrupted[i] ^= mask
            _write_bytes(bad, bytes(corrupted))
            try:
                meta, params, adam = load_checkpoint(bad)
            except CheckpointError:
                outcomes["error"] += 1
                continue
            assert meta == meta0, (i, mask)
            for name in params0:
                assert params[name].tobytes() == params0[name].tobytes(), (i, mask)
            outcomes["same"] += 1
    assert outcomes["error"] > 0.5 * len(positions)


def _assert_rejected(path, arrays, match):
    """Write ``arrays`` as a (valid zip) ``.npz`` at ``path``; loading must fail."""
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_changed_array_with_valid_zip_fails_checksum(saved, tmp_path):
    # The zip is intact (rewritten with fresh CRCs), but a parameter changed:
    # only the checksum can tell.
    path, _ = saved
    arrays = checkpoint_arrays(path)
    name = next(key for key in arrays if key.startswith("param/"))
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nextafter(arrays[name].flat[0], np.inf)  # one ulp
    _assert_rejected(tmp_path / "tampered.npz", arrays, "tampered.npz: checksum mismatch")


def test_renamed_array_fails_checksum(saved, tmp_path):
    # Same bytes in the same (sorted) order under another name: the checksum
    # covers the names too, so this is caught before a missing key could be.
    path, _ = saved
    arrays = checkpoint_arrays(path)
    arrays["param/0.cond.W1x"] = arrays.pop("param/0.cond.W1")
    _assert_rejected(tmp_path / "renamed.npz", arrays, "renamed.npz: checksum mismatch")


def test_changed_metadata_fails_checksum(saved, tmp_path):
    path, _ = saved
    arrays = checkpoint_arrays(path)
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["hyperparameters"]["hidden"] = 4  # checksum left as it was
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _assert_rejected(tmp_path / "meta.npz", arrays, "checksum mismatch")


def test_corrupted_metadata(saved, tmp_path):
    path, _ = saved
    arrays = checkpoint_arrays(path)
    for meta_bytes in (b"\xff\xfe not utf-8", b"{not json", b"[1, 2, 3]", b"{}"):
        arrays["meta"] = np.frombuffer(meta_bytes, dtype=np.uint8)
        _assert_rejected(tmp_path / "meta.npz", arrays,
                         "meta.npz: (checkpoint metadata is corrupted|not a radref checkpoint)")
    del arrays["meta"]
    _assert_rejected(tmp_path / "nometa.npz", arrays,
                     r"nometa.npz: not a radref checkpoint \(an .npz archive without radref's "
                     r"'meta' entry\)")


def test_wrong_format(saved, tmp_path):
    path, _ = saved
    bad = tmp_path / "format.npz"
    forge_checkpoint(bad, path, format="something-else")
    with pytest.raises(CheckpointError, match="format.npz: not a radref checkpoint"):
        load_checkpoint(bad)


@pytest.mark.parametrize("content", ["npy", "text", "empty_npz"])
def test_foreign_files(tmp_path, content):
    path = tmp_path / f"foreign.{content}"
    if content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(5.0))
    elif content == "text":
        path.write_text("this is not a checkpoint\n")
    else:
        with open(path, "wb") as f:
            np.savez(f)
    with pytest.raises(CheckpointError, match="foreign"):
        load_checkpoint(path)


def test_wrong_version(saved, tmp_path):
    path, _ = saved
    bad = tmp_path / "v99.npz"
    forge_checkpoint(bad, path, version=99)
    with pytest.raises(CheckpointError,
                       match=r"v99.npz: checkpoint version 99 is not supported "
                             r"\(this radref reads version 1\)"):
        load_checkpoint(bad)
    # the helper builds files exactly like save_checkpoint: unchanged, it loads
    ok = tmp_path / "v1.npz"
    forge_checkpoint(ok, path)
    assert load_checkpoint(ok)[0]["version"] == checkpoint.VERSION


def test_wrong_class(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match="holds a RadFlow, not a RealNVPFlow"):
        load_checkpoint(path, expected_model="RealNVPFlow")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.npz")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# ----------------------------------------------------------------- atomic save

def test_failed_save_leaves_existing_file_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    _save(path, step=1)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(file, *args, **kwargs):
        # write a real, partial archive, then fail midway
        real_savez(file, **dict(list(kwargs.items())[:3]))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="disk full"):
        _save(path, step=2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]

    def savez_interrupted(file, *args, **kwargs):
        file.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save(path, step=3)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]
    monkeypatch.undo()
    assert load_checkpoint(path)[0]["step"] == 1


def test_failed_rename_leaves_existing_file_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    _save(path, step=1)
    before = path.read_bytes()

    def replace_fails(src, dst):
        raise PermissionError("rename refused (simulated)")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(PermissionError):
        _save(path, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_unserialisable_metadata_writes_nothing(tmp_path):
    path = tmp_path / "ck.npz"
    _save(path, step=1)
    before = path.read_bytes()
    with pytest.raises(ValueError):  # NaN is not valid JSON (allow_nan=False)
        _save(path, extra={"loss": float("nan")})
    with pytest.raises(TypeError):
        _save(path, extra={"array": np.zeros(2)})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_save_into_missing_directory(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "ck.npz"
    with pytest.raises(FileNotFoundError):
        _save(target)
    assert not (tmp_path / "no").exists()
    assert os.listdir(tmp_path) == []


def test_saved_file_has_the_usual_mode_and_keeps_the_mode_it_replaces(tmp_path):
    import os
    from radref.training.checkpoint import save_checkpoint
    params = {"w": np.arange(3.0)}
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.npz"
        save_checkpoint(new, "RadFlow", {}, params)
        assert os.stat(new).st_mode & 0o777 == 0o644
        existing = tmp_path / "existing.npz"
        save_checkpoint(existing, "RadFlow", {}, params)
        os.chmod(existing, 0o640)
        save_checkpoint(existing, "RadFlow", {}, params)
        assert os.stat(existing).st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
