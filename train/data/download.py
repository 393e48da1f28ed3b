"""``nst data cifar10|cifar100``: download, verify and safely extract CIFAR.

Steps, each safe to interrupt and re-run:

1. If ``ROOT/<folder>/`` was already extracted *and verified* by this command
   (a ``.nst-verified.json`` marker whose per-file MD5s still match), say so
   and stop.
2. Get the official archive: ``--archive PATH`` (a file you downloaded
   yourself), else ``ROOT/<archive name>`` if it is already there with the right
   MD5, else download ``--url`` (default: the official Toronto URL; ``file://``
   URLs and plain local paths work too) into a temporary file, with a progress
   bar, hashing as it arrives, and rename it into place only when complete.
3. Check the MD5 (``--md5`` overrides the official one for a mirror that
   repackaged the archive).  A mismatch is an error and nothing is extracted.
4. Extract only regular files and folders under the expected top folder (no
   absolute paths, no ``..``, no links or devices), into a temporary folder;
   check the result with :func:`train.data.cifar.load_cifar`; write the marker; then
   rename the folder into place.
"""

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from nst.errors import NSTError
from nst.io import atomic_path, write_json

ARCHIVES = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "filename": "cifar-10-python.tar.gz",
        "folder": "cifar-10-batches-py",
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "filename": "cifar-100-python.tar.gz",
        "folder": "cifar-100-python",
    },
}
MARKER = ".nst-verified.json"
MAX_EXTRACTED_BYTES = 1 << 30   # the real archives unpack to < 200 MB
_CHUNK = 1 << 20


def add_arguments(parser):
    parser.add_argument("dataset", choices=sorted(ARCHIVES),
                        help="which dataset to download and verify")
    parser.add_argument("--root", default="data",
                        help="folder that receives the archive and the extracted dataset "
                             "folder (default: data/)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", default=None,
                        help="download from this URL instead of the official one (http, "
                             "https, file:// or a plain local path)")
    source.add_argument("--archive", default=None, metavar="PATH",
                        help="verify and extract an archive you already downloaded "
                             "(no network access)")
    parser.add_argument("--md5", default=None,
                        help="expected MD5 of the archive (default: the official one); for "
                             "mirrors that repackaged it")
    parser.add_argument("--force", action="store_true",
                        help="re-extract even if the dataset folder is already present")


def run(args):
    prepare(args.dataset, args.root, url=args.url, archive=args.archive, md5=args.md5,
            force=args.force)
    return 0


# ---------------------------------------------------------------------------

def md5sum(path, chunk=_CHUNK):
    """Hex MD5 of a file."""
    digest = hashlib.md5()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    except OSError as err:
        raise NSTError("cannot read %s (%s): check that the file exists and is readable"
                       % (path, err.strerror or err)) from err
    return digest.hexdigest()


def _file_mode():
    """0666 minus the umask: what a plain open() would give (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _check_md5_text(md5):
    md5 = md5.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise NSTError("--md5 must be 32 hexadecimal digits, not %r" % (md5,))
    return md5


def _manual_hint(name, root):
    spec = ARCHIVES[name]
    return ("download %s (md5 %s) in a browser or on a machine with internet access, copy it "
            "here and run `nst data %s --root %s --archive PATH/%s`"
            % (spec["url"], spec["md5"], name, root, spec["filename"]))


def _as_url(url_or_path):
    """A URL for urllib: URLs pass through, local paths become file:// URLs."""
    scheme = urllib.parse.urlsplit(url_or_path).scheme.lower()
    if "://" in url_or_path:
        if scheme not in ("http", "https", "ftp", "file"):
            raise NSTError("unsupported URL scheme %r in %s: use http(s)://, file:// or a local "
                           "path" % (scheme, url_or_path))
        if scheme == "file":
            path = urllib.request.url2pathname(urllib.parse.urlsplit(url_or_path).path)
            if not os.path.isfile(path):
                raise NSTError("%s points to %s, which does not exist: check the path"
                               % (url_or_path, path))
        return url_or_path
    if not os.path.isfile(url_or_path):
        raise NSTError("--url %s is neither a URL nor an existing file: give an http(s):// or "
                       "file:// URL, or the path of the archive" % url_or_path)
    return "file://" + urllib.request.pathname2url(os.path.abspath(url_or_path))


def _network_error(url, err, name, root):
    reason = getattr(err, "reason", None) or err
    if isinstance(err, urllib.error.HTTPError):
        what = "the server answered HTTP %s %s" % (err.code, err.reason)
    else:
        what = "this machine cannot reach it (%s: %s)" % (type(err).__name__, reason)
    return NSTError("cannot download %s: %s. Check your connection or proxy, or %s"
                    % (url, what, _manual_hint(name, root)))


def download(url, dest, expected_md5, name="cifar10", root="data", timeout=60):
    """Download ``url`` to ``dest`` atomically, with a progress bar, checking the MD5.

    On a mismatch or an incomplete transfer the partial file is removed and
    :class:`NSTError` is raised; ``dest`` only ever appears complete and verified.
    """
    from tqdm import tqdm

    url = _as_url(url)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise _network_error(url, err, name, root) from err
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        digest = hashlib.md5()
        received = 0
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as handle, tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=os.path.basename(dest), disable=None, file=sys.stderr) as bar:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise NSTError(
                            "the download of %s broke off after %d bytes (%s: %s); the partial "
                            "file was removed. Re-run the command, or %s"
                            % (url, received, type(err).__name__, err,
                               _manual_hint(name, root))) from err
                    if not block:
                        break
                    handle.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and received != total:
                raise NSTError("the download of %s broke off after %d of %d bytes; the partial "
                               "file was removed. Re-run the command, or %s"
                               % (url, received, total, _manual_hint(name, root)))
            os.chmod(tmp, _file_mode())
            actual = digest.hexdigest()
            if actual != expected_md5:
                raise NSTError(
                    "the file downloaded from %s is corrupt: its MD5 is %s, expected %s. It "
                    "was removed and nothing was extracted. Re-run the command to download it "
                    "again; if you use a mirror that repackaged the archive and you trust it, "
                    "pass --md5 %s" % (url, actual, expected_md5, actual))
    return actual


# ---------------------------------------------------------------------------

def _checked_members(tar, folder, archive):
    """Validate every member before anything is written; return them in order."""
    members = []
    total = 0
    for member in tar:
        name = member.name
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        bad = None
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            bad = "has an absolute path"
        elif ".." in parts:
            bad = "contains '..'"
        elif member.issym() or member.islnk():
            bad = "is a link (to %s)" % member.linkname
        elif not (member.isfile() or member.isdir()):
            bad = "is a device, FIFO or other special file"
        elif not parts or parts[0] != folder:
            bad = "lies outside %s/" % folder
        if bad:
            raise NSTError("refusing to extract %s: member %r %s. The official archive holds "
                           "only %s/ with plain files; this archive is not it (or was "
                           "tampered with): delete it and download the official one"
                           % (archive, name, bad, folder))
        total += member.size if member.isfile() else 0
        if total > MAX_EXTRACTED_BYTES:
            raise NSTError("refusing to extract %s: it unpacks to more than %d MB, far more than "
                           "the CIFAR archives; delete it and download the official one"
                           % (archive, MAX_EXTRACTED_BYTES >> 20))
        members.append((member, parts))
    return members


def extract(archive, root, folder):
    """Safely extract ``folder/`` of ``archive`` into a new temporary folder in ``root``.

    Returns the temporary folder (which holds ``folder/``); the caller moves it
    into place.  Nothing is written unless every member passes the checks.
    """
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise NSTError("cannot open %s as a tar.gz archive (%s): it is damaged or not the "
                       "CIFAR archive; delete it and download it again" % (archive, err)) from err
    staging = None
    try:
        with tar:
            try:
                members = _checked_members(tar, folder, archive)
                staging = tempfile.mkdtemp(prefix=".nst-extract-", dir=root)
                for member, parts in members:
                    dest = os.path.join(staging, *parts)
                    if member.isdir():
                        os.makedirs(dest, exist_ok=True)
                        continue
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    source = tar.extractfile(member)
                    with source, open(dest, "xb") as handle:
                        shutil.copyfileobj(source, handle, _CHUNK)
            except (tarfile.TarError, EOFError, ValueError) as err:
                raise NSTError("%s is damaged (%s: %s); delete it and download it again"
                               % (archive, type(err).__name__, err)) from err
            except OSError as err:
                if getattr(err, "filename", None) is None and not err.strerror:
                    raise NSTError("%s is damaged (%s); delete it and download it again"
                                   % (archive, err)) from err
                raise NSTError("cannot extract %s into %s (%s): check free disk space and "
                               "permissions" % (archive, root, err.strerror or err)) from err
        if not os.path.isdir(os.path.join(staging, folder)):
            raise NSTError("%s holds no %s/ folder: it is not the expected CIFAR archive"
                           % (archive, folder))
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


# ---------------------------------------------------------------------------

def _file_manifest(folder):
    files = {}
    for dirpath, _, filenames in os.walk(folder):
        for fname in sorted(filenames):
            if fname == MARKER:
                continue
            path = os.path.join(dirpath, fname)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            files[rel] = {"size": os.path.getsize(path), "md5": md5sum(path)}
    return files


def is_verified(root, name, archive_md5=None):
    """True if ``root/<folder>`` was extracted by this command from an archive with
    ``archive_md5`` (default: the official one) and no file changed since."""
    import json

    folder = os.path.join(root, ARCHIVES[name]["folder"])
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as handle:
            marker = json.load(handle)
        files = marker["files"]
        if marker.get("archive_md5") != (archive_md5 or ARCHIVES[name]["md5"]) or not files:
            return False
        for rel, info in files.items():
            path = os.path.join(folder, *rel.split("/"))
            if os.path.getsize(path) != info["size"] or md5sum(path) != info["md5"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError, NSTError):
        return False
    return True


def _check_readable(root, name):
    """Load both splits and the class names; return image counts or raise NSTError."""
    from .cifar import load_cifar, load_cifar_meta

    counts = {split: len(load_cifar(root, name, split)[1]) for split in ("train", "test")}
    load_cifar_meta(root, name)
    return counts


def _move_into_place(staging, root, folder):
    target = os.path.join(root, folder)
    old = None
    try:
        if os.path.lexists(target):
            old = tempfile.mkdtemp(prefix=".nst-old-", dir=root)
            os.replace(target, os.path.join(old, folder))
        os.replace(os.path.join(staging, folder), target)
    except OSError as err:
        if old is not None and not os.path.lexists(target):
            try:
                os.replace(os.path.join(old, folder), target)
            except OSError:
                pass
        raise NSTError("cannot move the extracted %s into %s (%s): check permissions"
                       % (folder, root, err.strerror or err)) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def prepare(name, root="data", url=None, archive=None, md5=None, force=False, log=print):
    """Make ``root/<folder>`` hold the verified dataset; return its path.

    See the module docstring for the steps.  Raises :class:`NSTError` on any
    problem (network, checksum, unsafe archive, unreadable content).
    """
    if name not in ARCHIVES:
        raise NSTError("unknown dataset %r: choose one of %s" % (name, ", ".join(sorted(ARCHIVES))))
    if url is not None and archive is not None:
        raise NSTError("give either --url or --archive, not both")
    spec = ARCHIVES[name]
    root = os.fspath(root)
    expected = _check_md5_text(md5) if md5 else spec["md5"]
    folder = spec["folder"]
    target = os.path.join(root, folder)

    if not force and os.path.isdir(target):
        if is_verified(root, name, expected):
            log("%s is already downloaded, extracted and verified in %s; nothing to do"
                % (name, target))
            return target
        try:
            counts = _check_readable(root, name)
        except NSTError as err:
            log("%s exists but is not usable (%s); replacing it from the archive" % (target, err))
        else:
            log("%s already holds a readable %s (%d train, %d test images) that nst did not "
                "verify against the archive MD5; keeping it. Use --force to replace it with a "
                "verified copy" % (target, name, counts["train"], counts["test"]))
            return target

    try:
        os.makedirs(root, exist_ok=True)
    except OSError as err:
        raise NSTError("cannot create the data folder %s (%s): choose a writable --root"
                       % (root, err.strerror or err)) from err

    if archive is not None:
        if not os.path.isfile(archive):
            raise NSTError("--archive %s does not exist: give the path of the downloaded %s"
                           % (archive, spec["filename"]))
        actual = md5sum(archive)
        if actual != expected:
            raise NSTError(
                "%s is corrupt or not the %s archive: its MD5 is %s, expected %s. Nothing was "
                "extracted and the file was left in place; delete it and download it again "
                "(or pass --md5 %s if a trusted mirror repackaged it)"
                % (archive, spec["filename"], actual, expected, actual))
        log("verified %s (md5 %s)" % (archive, actual))
        source = archive
    else:
        source = os.path.join(root, spec["filename"])
        if os.path.isfile(source) and md5sum(source) == expected:
            log("using the already downloaded %s (md5 verified)" % source)
        else:
            if os.path.exists(source):
                log("%s exists but its MD5 is wrong (an older or damaged download); "
                    "downloading it again" % source)
                os.remove(source)
            src_url = url or spec["url"]
            log("downloading %s to %s" % (src_url, source))
            download(src_url, source, expected, name=name, root=root)
            log("verified %s (md5 %s)" % (source, expected))

    staging = extract(source, root, folder)
    try:
        try:
            counts = _check_readable(staging, name)
        except NSTError as err:
            raise NSTError("the archive %s was extracted but its content is not a usable %s "
                           "(%s); nothing was installed" % (source, name, err)) from None
        marker = os.path.join(staging, folder, MARKER)
        write_json(marker, {"dataset": name, "archive": os.path.basename(source),
                            "archive_md5": expected, "images": counts,
                            "files": _file_manifest(os.path.join(staging, folder))})
        os.chmod(marker, _file_mode())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    target = _move_into_place(staging, root, folder)
    log("%s is ready in %s (%d train, %d test images)"
        % (name, target, counts["train"], counts["test"]))
    return target
