"""``nst data``: download (from file:// URLs, no internet), verify, safe extraction."""

import hashlib
import http.server
import io
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from nst.cli import main
from nst.errors import NSTError
from train import data as D
from train.data import download as DL


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _tar_folder(archive, source_root, folder="cifar-10-batches-py", extra=None):
    """tar.gz ``source_root/folder`` (arcname ``folder/...``) plus raw ``extra`` members."""
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(str(Path(source_root) / folder), arcname=folder)
        for member, payload in (extra or []):
            tar.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return Path(archive)


@pytest.fixture
def fake_archive(tmp_path, make_cifar10):
    """A small, genuine-looking cifar-10-python.tar.gz (synthetic records)."""
    make_cifar10(tmp_path / "src", per_file=4, test=3)
    archive = _tar_folder(tmp_path / "cifar-10-python.tar.gz", tmp_path / "src")
    return archive, _md5(archive)


def _nst_data(*args):
    return main(["data"] + [str(a) for a in args])


def _leftovers(root):
    return sorted(p.name for p in Path(root).iterdir() if p.name.startswith("."))


def test_download_from_file_url_then_idempotent(tmp_path, fake_archive, capsys):
    archive, md5 = fake_archive
    root = tmp_path / "data"
    assert _nst_data("cifar10", "--root", root, "--url", archive.as_uri(), "--md5", md5) == 0
    out = capsys.readouterr().out
    assert "is ready" in out and "20 train, 3 test" in out
    images, labels = D.load_cifar(root, "cifar10", "train")
    assert images.shape == (20, 32, 32, 3) and labels.dtype == np.int32
    assert D.load_cifar(root, "cifar10", "test")[0].shape == (3, 32, 32, 3)
    assert D.load_cifar_meta(root, "cifar10")[0] == "airplane"
    assert (root / "cifar-10-python.tar.gz").is_file()            # archive kept for re-runs
    assert (root / "cifar-10-batches-py" / DL.MARKER).is_file()
    assert DL.is_verified(root, "cifar10", md5)
    assert _leftovers(root) == []                                  # no temp files left
    # second run: nothing to do
    assert _nst_data("cifar10", "--root", root, "--url", archive.as_uri(), "--md5", md5) == 0
    assert "already downloaded, extracted and verified" in capsys.readouterr().out
    # a modified file is detected: the folder is no longer "verified" but still readable
    (root / "cifar-10-batches-py" / "readme.txt").write_text("x")
    assert DL.is_verified(root, "cifar10", md5)       # extra files don't matter ...
    batch = root / "cifar-10-batches-py" / "test_batch"
    raw = bytearray(batch.read_bytes())
    raw[-100] ^= 0xFF                                 # one pixel changed
    batch.write_bytes(bytes(raw))
    assert not DL.is_verified(root, "cifar10", md5)   # ... changed ones do


def test_local_path_url_and_archive_option(tmp_path, fake_archive, capsys):
    archive, md5 = fake_archive
    root = tmp_path / "a"
    assert _nst_data("cifar10", "--root", root, "--url", archive, "--md5", md5.upper()) == 0
    assert D.load_cifar(root, "cifar10", "train")[0].shape == (20, 32, 32, 3)
    root = tmp_path / "b"
    assert _nst_data("cifar10", "--root", root, "--archive", archive, "--md5", md5) == 0
    assert D.load_cifar(root, "cifar10", "test")[0].shape == (3, 32, 32, 3)
    assert not (root / "cifar-10-python.tar.gz").exists()         # --archive is used in place
    assert archive.is_file()


def test_wrong_md5_extracts_nothing(tmp_path, fake_archive, capsys):
    archive, _ = fake_archive
    root = tmp_path / "data"
    code = _nst_data("cifar10", "--root", root, "--url", archive.as_uri(), "--md5", "0" * 32)
    err = capsys.readouterr().err
    assert code == 2
    assert "corrupt" in err and "MD5" in err and "removed" in err and "Re-run" in err
    assert _md5(archive) in err                                   # tells the actual MD5
    assert not (root / "cifar-10-batches-py").exists()
    assert not (root / "cifar-10-python.tar.gz").exists()
    assert _leftovers(root) == []
    # the default md5 is the official one, which the fake archive does not match
    assert _nst_data("cifar10", "--root", root, "--url", archive.as_uri()) == 2
    assert "c58f30108f718f92721af3b95e74349a" in capsys.readouterr().err
    # --archive with a wrong md5: refused, and the user's file is left alone
    assert _nst_data("cifar10", "--root", root, "--archive", archive, "--md5", "1" * 32) == 2
    assert "left in place" in capsys.readouterr().err
    assert archive.is_file() and not (root / "cifar-10-batches-py").exists()


def _member(name, kind=tarfile.REGTYPE, payload=b"x", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(payload) if kind == tarfile.REGTYPE else 0
    return info, (payload if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("member,reason", [
    (_member("../evil"), "contains '..'"),
    (_member("cifar-10-batches-py/../../evil"), "contains '..'"),
    (_member("/tmp/evil-nst-absolute"), "absolute path"),
    (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, linkname="/etc/passwd"), "is a link"),
    (_member("cifar-10-batches-py/hard", tarfile.LNKTYPE,
             linkname="cifar-10-batches-py/test_batch"), "is a link"),
    (_member("cifar-10-batches-py/fifo", tarfile.FIFOTYPE), "special file"),
    (_member("other-folder/file"), "outside cifar-10-batches-py"),
])
def test_unsafe_archive_is_refused(tmp_path, make_cifar10, capsys, member, reason):
    make_cifar10(tmp_path / "src", per_file=2, test=2)
    archive = _tar_folder(tmp_path / "evil.tar.gz", tmp_path / "src", extra=[member])
    root = tmp_path / "data"
    code = _nst_data("cifar10", "--root", root, "--url", archive.as_uri(), "--md5", _md5(archive))
    err = capsys.readouterr().err
    assert code == 2 and "refusing to extract" in err and reason in err
    assert not (root / "cifar-10-batches-py").exists()
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-nst-absolute").exists()
    assert _leftovers(root) == []


def test_archive_with_bad_content_installs_nothing(tmp_path, make_cifar10, capsys):
    src = make_cifar10(tmp_path / "src", per_file=2, test=2)
    (src / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    archive = _tar_folder(tmp_path / "bad.tar.gz", src)
    root = tmp_path / "data"
    code = _nst_data("cifar10", "--root", root, "--archive", archive, "--md5", _md5(archive))
    err = capsys.readouterr().err
    assert code == 2 and "not a usable cifar10" in err and "test_batch" in err
    assert not (root / "cifar-10-batches-py").exists() and _leftovers(root) == []


def test_damaged_gzip_is_reported(tmp_path, fake_archive, capsys):
    archive, _ = fake_archive
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    code = _nst_data("cifar10", "--root", tmp_path / "data", "--archive", cut, "--md5", _md5(cut))
    assert code == 2 and "damaged" in capsys.readouterr().err
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields the base URL."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def do_GET(self):
            if self.path.endswith("/short.tar.gz"):   # announces more than it sends
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"x" * 1000)
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_download_over_http(tmp_path, fake_archive, http_server, capsys):
    archive, md5 = fake_archive
    www, base = http_server
    shutil.copy(archive, www / "cifar-10-python.tar.gz")
    root = tmp_path / "data"
    assert _nst_data("cifar10", "--root", root, "--url", base + "/cifar-10-python.tar.gz",
                     "--md5", md5) == 0
    assert D.load_cifar(root, "cifar10", "train")[0].shape == (20, 32, 32, 3)
    code = _nst_data("cifar10", "--root", tmp_path / "d2", "--url", base + "/missing.tar.gz",
                     "--md5", md5)
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 404" in err and "--archive" in err
    assert not (tmp_path / "d2" / "cifar-10-python.tar.gz").exists()
    code = _nst_data("cifar10", "--root", tmp_path / "d3", "--url", base + "/short.tar.gz",
                     "--md5", md5)
    err = capsys.readouterr().err
    assert code == 2 and "broke off" in err and "partial file was removed" in err
    assert list((tmp_path / "d3").iterdir()) == []


def test_network_failure_explains_manual_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # port 9 (discard) on localhost: connection refused at once, no internet needed
    code = _nst_data("cifar10", "--root", tmp_path, "--url",
                     "http://127.0.0.1:9/cifar-10-python.tar.gz")
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot reach" in err and "--archive" in err
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in err
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()


def test_bad_options(tmp_path, fake_archive, capsys):
    archive, md5 = fake_archive
    assert _nst_data("cifar10", "--root", tmp_path, "--archive", archive, "--md5", "xyz") == 2
    assert "32 hexadecimal" in capsys.readouterr().err
    assert _nst_data("cifar10", "--root", tmp_path, "--archive", tmp_path / "missing.tgz") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _nst_data("cifar10", "--root", tmp_path, "--url", tmp_path / "missing.tgz") == 2
    assert "neither a URL nor an existing file" in capsys.readouterr().err
    assert _nst_data("cifar10", "--root", tmp_path, "--url", "gopher://x/y") == 2
    assert "unsupported URL scheme" in capsys.readouterr().err
    assert _nst_data("mnist") == 2                                # argparse: unknown dataset
    assert "invalid choice: 'mnist'" in capsys.readouterr().err
    with pytest.raises(NSTError, match="either --url or --archive"):
        DL.prepare("cifar10", tmp_path, url="file:///x", archive="y")


def test_existing_folder_kept_or_replaced(tmp_path, make_cifar10, fake_archive, capsys):
    archive, md5 = fake_archive
    root = make_cifar10(tmp_path / "data", per_file=1, test=1)    # a readable, unverified copy
    assert _nst_data("cifar10", "--root", root, "--archive", archive, "--md5", md5) == 0
    assert "keeping it" in capsys.readouterr().out
    assert len(D.load_cifar(root, "cifar10", "train")[1]) == 5
    assert _nst_data("cifar10", "--root", root, "--archive", archive, "--md5", md5,
                     "--force") == 0
    assert len(D.load_cifar(root, "cifar10", "train")[1]) == 20
    assert _leftovers(root) == []
    # a broken copy is replaced without --force
    (root / "cifar-10-batches-py" / "data_batch_2").unlink()
    (root / "cifar-10-batches-py" / DL.MARKER).unlink()
    assert _nst_data("cifar10", "--root", root, "--archive", archive, "--md5", md5) == 0
    assert "replacing it" in capsys.readouterr().out
    assert len(D.load_cifar(root, "cifar10", "train")[1]) == 20


def test_stale_archive_in_root_is_downloaded_again(tmp_path, fake_archive, capsys):
    archive, md5 = fake_archive
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"half a download")
    assert _nst_data("cifar10", "--root", root, "--url", archive.as_uri(), "--md5", md5) == 0
    assert "downloading it again" in capsys.readouterr().out
    assert _md5(root / "cifar-10-python.tar.gz") == md5
    # with the archive present and right, a forced re-extraction does not download
    assert _nst_data("cifar10", "--root", root, "--md5", md5, "--force") == 0
    assert "using the already downloaded" in capsys.readouterr().out


def test_cifar100_archive(tmp_path, make_cifar100, capsys):
    make_cifar100(tmp_path / "src", train=10, test=4)
    archive = _tar_folder(tmp_path / "c100.tar.gz", tmp_path / "src", folder="cifar-100-python")
    root = tmp_path / "data"
    assert _nst_data("cifar100", "--root", root, "--url", archive.as_uri(),
                     "--md5", _md5(archive)) == 0
    assert D.load_cifar(root, "cifar100", "train", label_mode="coarse")[0].shape == (10, 32, 32, 3)
    # a CIFAR-10 archive given for cifar100 is refused before extraction
    wrong = _tar_folder(tmp_path / "c10.tar.gz", tmp_path / "src", folder="cifar-100-python",
                        extra=[_member("cifar-10-batches-py/test_batch")])
    assert _nst_data("cifar100", "--root", tmp_path / "d2", "--archive", wrong,
                     "--md5", _md5(wrong)) == 2
    assert "outside cifar-100-python" in capsys.readouterr().err


def test_real_subset_round_trip(tmp_path, cifar_root, capsys):
    """The real 6,187-image subset, packed as the official archive, goes through."""
    archive = _tar_folder(tmp_path / "cifar-10-python.tar.gz", cifar_root)
    root = tmp_path / "data"
    assert _nst_data("cifar10", "--root", root, "--url", archive.as_uri(),
                     "--md5", _md5(archive)) == 0
    assert "5170 train, 1017 test" in capsys.readouterr().out
    ours, theirs = (D.load_cifar(r, "cifar10", "test") for r in (root, cifar_root))
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])
