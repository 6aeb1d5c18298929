"""Every command line mclu runs on a host, in one place: argv lists, never shell text built
from input (a script that needs a shell takes its values as positional parameters).

Each function returns the argv of one command; the caller runs it (`Session.run` or
`Session.background`) and reads its result. The fake host (`mclu.hosts.fake`) answers these
same lines by calling these same functions, and the contract suite
(tests/contract/test_commands_contract.py) runs each against a real sandbox host and the fake
with the same expectations, so the fake cannot drift from the truth.

The general commands come first (files, directories, images, qemu-nbd), for every part of
mclu to reuse; the commands of one part of mclu follow in sections of their own.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from mclu import hostpaths


def script(text: str, *args: str) -> list[str]:
    """A shell script run with `args` as its positional parameters ("$1"...): the values
    never become shell text."""
    return ["sh", "-c", text, "sh", *args]


# --- files and directories ---------------------------------------------------------------------


def remove(*paths: str) -> list[str]:
    """Delete files; a missing one is no error (exit 0)."""
    return ["rm", "-f", "--", *paths]


def remove_tree(path: str) -> list[str]:
    """Delete a directory and everything in it; a missing one is no error."""
    return ["rm", "-rf", "--", path]


def make_directory(path: str, mode: str | None = None) -> list[str]:
    """Create a directory and its parents; an existing one is no error. `mode` (octal, e.g.
    "0711") is given to the directories it creates."""
    return ["mkdir", "-p", *(["-m", mode] if mode else []), "--", path]


def exists(path: str) -> list[str]:
    """Exit 0 if `path` exists (any kind of file), 1 if not."""
    return ["test", "-e", path]


def is_file(path: str) -> list[str]:
    """Exit 0 if `path` is a regular file, 1 if not."""
    return ["test", "-f", path]


def is_socket(path: str) -> list[str]:
    """Exit 0 if `path` is a unix socket (a server listens there), 1 if not."""
    return ["test", "-S", path]


def read_file(path: str) -> list[str]:
    """A file's content on stdout; exit 1 if it cannot be read."""
    return ["cat", "--", path]


def file_size(path: str) -> list[str]:
    """A file's size in bytes, one line on stdout."""
    return ["stat", "-c", "%s", "--", path]


def make_private(path: str) -> list[str]:
    """Only its owner may read or write the file (0600)."""
    return ["chmod", "0600", "--", path]


# stdin into a new file only its owner may read (noclobber: an existing file is not replaced);
# a write that fails (a full disk) removes the part it wrote, which mclu has not yet registered
# for removal (it may hold private keys): made empty first, so a refusal is told from a failure.
WRITE_NEW_SCRIPT = (
    'umask 077 && set -C && { true > "$1" || exit 1; } && '
    '{ cat >> "$1" || { rm -f -- "$1"; exit 1; }; }'
)


def write_new_file(path: str) -> list[str]:
    """Write stdin to the new file `path`, mode 0600; refuses (exit 1, nothing written) when
    `path` exists; a failed write leaves no file."""
    return script(WRITE_NEW_SCRIPT, path)


def link(path: str, new: str) -> list[str]:
    """A second name `new` for the file `path` (a hard link). Refuses (exit 1) when `new`
    exists, so a file that appeared meanwhile is never replaced."""
    return ["ln", "--", path, new]


def move_over(path: str, dest: str) -> list[str]:
    """Rename `path` to `dest`, replacing a file `dest` (one rename: atomic)."""
    return ["mv", "-f", "-T", "--", path, dest]


# Flush the data, rename over dest, flush the directory: dest is the whole new file or the old one.
COMMIT_SCRIPT = 'sync -- "$1" && mv -f -T -- "$1" "$2" && sync -- "$3"'


def commit(partial: str, dest: str) -> list[str]:
    """Put a fully written `partial` file in place as `dest`, durably: synced, renamed over
    dest (atomic), and dest's directory synced."""
    return script(COMMIT_SCRIPT, partial, dest, posixpath.dirname(dest) or ".")


# DEST emptied (a replaced file keeps no old data) and given its size as one hole.
EMPTY_FILE_SCRIPT = ': > "$1" && truncate -s "$2" -- "$1"'


def empty_file(path: str, size: int) -> list[str]:
    """Create or empty `path` and give it `size` bytes, all a hole (they read as zeros)."""
    return script(EMPTY_FILE_SCRIPT, path, str(size))


def set_size(path: str, size: int) -> list[str]:
    """Cut or extend the file to `size` bytes (an extension is a hole)."""
    return ["truncate", "-s", str(size), "--", path]


def tail(path: str, size: int) -> list[str]:
    """The last `size` bytes of a file; exit 1 if it cannot be read."""
    return ["tail", "-c", str(size), "--", path]


# --- images ------------------------------------------------------------------------------------


def image_create(
    path: str,
    image_format: str,
    size: int,
    backing: str | None = None,
    backing_format: str | None = None,
) -> list[str]:
    """A new image of `size` bytes; with `backing` an overlay on that file (qemu-img)."""
    argv = ["qemu-img", "create", "-q", "-f", image_format]
    if backing is not None:
        argv += ["-b", backing, "-F", backing_format or "raw"]
    return [*argv, path, str(size)]


# The copy keeps the source's holes; then it is given its size (a bigger disk: a hole at its end).
SPARSE_COPY_SCRIPT = 'cp --sparse=always -- "$1" "$2" && truncate -s "$3" -- "$2"'


def sparse_copy(source: str, dest: str, size: int) -> list[str]:
    """A full copy of the raw image `source` as `dest`, holes kept, `size` bytes long."""
    return script(SPARSE_COPY_SCRIPT, source, dest, str(size))


def zstd_receive(dest: str, zstd: str = "zstd") -> list[str]:
    """Decompress zstd frames from stdin into `dest`, writing runs of zeros as holes."""
    return [zstd, "-d", "-q", "-f", "--sparse", "-o", dest]


# --- qemu-nbd ----------------------------------------------------------------------------------

# Runs "$@" (qemu-nbd) with its socket in the new private directory "$1", and removes that
# directory when the server ends, by itself or stopped: `Session.background` stops it with
# SIGTERM when its block ends and when the ssh connection dies (mclu killed outright), so
# the directory never outlives the run.
NBD_SERVER_SCRIPT = (
    "d=$1; shift; p=\n"
    'trap \'kill "$p" 2>/dev/null; wait "$p"; rm -rf -- "$d"; exit 143\' TERM HUP\n'
    'mkdir -m 0700 -- "$d" || exit 1\n'
    '"$@" & p=$!\n'
    'wait "$p"; s=$?\n'
    'rm -rf -- "$d"\n'
    'exit "$s"\n'
)


def qemu_nbd(
    socket: str, image: str, options: Sequence[str], program: str = "qemu-nbd"
) -> list[str]:
    """qemu-nbd serving `image` on the unix socket `socket`, with its `options`."""
    return [program, "--socket", socket, *options, image]


def nbd_server(directory: str, server: Sequence[str]) -> list[str]:
    """Run the `server` argv (qemu-nbd, its socket in `directory`) in the new private (0700)
    directory `directory`, removed when the server ends (for `Session.background`)."""
    return script(NBD_SERVER_SCRIPT, directory, *server)


# --- a session's background commands and locks (mclu.hosts.ssh) ------------------------------

# Runs "$@" for as long as the channel's stdin stays open: at its end (the block exits, or
# the connection drops and sshd closes the pipe) the watcher kills the command; the script's
# exit status is the command's. The watcher's output goes nowhere, so that the channel closes
# as soon as the command ends by itself.
BACKGROUND_SCRIPT = (
    # An asynchronous list's stdin is /dev/null unless redirected (POSIX): hand the channel
    # to the watcher as fd 3.
    "exec 3<&0\n"
    '"$@" </dev/null 3<&- & p=$!\n'
    '{ cat <&3 >/dev/null; kill "$p"; } >/dev/null 2>&1 &\n'
    "exec 3<&-\n"
    'wait "$p"\n'
)


def background(argv: Sequence[str]) -> list[str]:
    """`argv` run until it ends, or until the channel's stdin ends (then it is killed); the
    exit status is argv's (`Session.background` on an ssh session)."""
    return script(BACKGROUND_SCRIPT, *argv)


# Takes an exclusive flock on "$1" without waiting and holds it until the channel's stdin ends
# (the block exits, or the connection drops and sshd closes the pipe): `cat` inherits the
# locked descriptor and exits at that end. Prints "locked" once held; when another process
# holds it, prints what that process wrote into the file ("$2", its holder) and exits 75.
LOCK_SCRIPT = (
    "umask 077\n"
    'mkdir -p -- "${1%/*}" && exec 9>>"$1" || exit 70\n'
    'flock -n 9 || { cat -- "$1" >&2; exit 75; }\n'
    'printf "%s\\n" "$2" >"$1"\n'
    "echo locked\n"
    "exec cat >/dev/null\n"
)
LOCK_HELD = 75  # the lock script's exit status when another process holds the lock


def lock(path: str, holder: str) -> list[str]:
    """An exclusive flock on the file `path` (made, with its directory), taken without
    waiting and held until stdin ends; `holder` is written into the file and "locked"
    printed once held. Exit LOCK_HELD, the holder's text on stderr, when another process
    holds it (`Session.lock` on an ssh session)."""
    return script(LOCK_SCRIPT, path, holder)


# --- guests' consoles --------------------------------------------------------------------------


def console_tail(name: str, size: int) -> list[str]:
    """The last `size` bytes of the guest's console log (this boot's: the log starts empty at
    each boot)."""
    return tail(hostpaths.console_log(name), size)


# --- cleanup, delete, prune, storage scan ------------------------------------------------------

# One command, on the image directory "$1" and mclu's cache "$2" and lock directory "$3" in
# it (`mclu.hostpaths` names them): the host's clock; with "$4" the free space, the cached
# bases and the names in the image directory; mclu's partial files (find patterns "$6"...) in
# the image and cache directories, each with its modification time; which of them a process
# names on its command line (a writer, a server: the candidate paths reach grep on its stdin,
# so no command line here names them); the guests' lock files (pattern "$5"); and the
# kernel's list of flocks held. /proc is read only when there are candidates; everything is
# best effort (a missing directory is an empty one). `mclu.read.storage` parses its sections.
SCAN_SCRIPT = r"""img=$1; cache=$2; locks=$3; storage=$4; lock=$5; shift 5
# the partial files' patterns as find's `-name P1 -o -name P2 ...`
n=$#; for p; do set -- "$@" -o -name "$p"; done; shift "$((n + 1))"
printf '@now %s\n' "$(date +%s)"
if [ -n "$storage" ]; then
  echo @df
  df --output=avail -B1 -- "$img" 2>&1
  printf '@dfstatus %s\n' "$?"
  echo @cache
  find "$cache" -maxdepth 1 -type f -name '*.raw' -printf '%f\n' 2>/dev/null
  echo @files
  find "$img" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null
fi
found=$(find "$img" "$cache" -maxdepth 1 -type f \( "$@" \) -printf '%T@ %p\n' 2>/dev/null)
echo @partial
if [ -n "$found" ]; then
  printf '%s\n' "$found"
  echo @inuse
  printf '%s\n' "$found" | cut -d' ' -f2- | grep -aFoh -f - /proc/[0-9]*/cmdline 2>/dev/null \
    | sort -u
fi
echo @locks
find "$locks" -maxdepth 1 -type f -name "$lock" -printf '%D %i %f\n' 2>/dev/null
echo @proclocks
grep -F FLOCK /proc/locks 2>/dev/null
true
"""


def storage_scan(image_dir: str) -> list[str]:
    """The image directory's free bytes, cached bases and the names in it (a new disk's
    name must be free), and the leftovers of interrupted runs (partial files, which a
    process names, the locks held), in `@section` lines."""
    return _scan(image_dir, storage=True)


def leftover_scan(image_dir: str) -> list[str]:
    """`storage_scan` without the free bytes and cached bases: the leftovers only."""
    return _scan(image_dir, storage=False)


def _scan(image_dir: str, *, storage: bool) -> list[str]:
    return script(
        SCAN_SCRIPT,
        image_dir,
        hostpaths.cache_dir(image_dir),
        hostpaths.lock_dir(image_dir),
        "storage" if storage else "",
        f"*{hostpaths.LOCK_SUFFIX}",
        *hostpaths.LEFTOVER_PATTERNS,
    )


def base_ages(cache_dir: str) -> list[str]:
    """The host's clock (`date +%s`), then `NAME MTIME` of each base in the cache."""
    return script(
        'date +%s; find "$1" -maxdepth 1 -type f -name "*.raw" -printf "%f %T@\\n"', cache_dir
    )


def qcow2_files(image_dir: str) -> list[str]:
    """The qcow2 files in the image directory, one path a line (overlays a base may be under)."""
    return ["find", image_dir, "-maxdepth", "1", "-type", "f", "-name", "*.qcow2"]


def backing_info(disks: Sequence[str]) -> list[str]:
    """`qemu-img info --output=json` of each disk, concatenated (one that cannot be read is
    skipped): their backing files. -U: a running guest's disk is read without its lock."""
    return script('for f; do qemu-img info -U --output=json -- "$f" || true; done', *disks)


def change_times(paths: Sequence[str]) -> list[str]:
    """`CTIME PATH` (seconds, host clock) of each of `paths` that exists."""
    return script('for f; do [ -e "$f" ] && stat -c "%Z %n" -- "$f"; done; true', *paths)


# Removes each path read from stdin that no process names on its command line (the paths come
# on stdin so that this script's own command line does not name them); prints those removed.
REMOVE_UNUSED_SCRIPT = r"""while IFS= read -r f; do
  [ -e "$f" ] || continue
  if printf '%s\n' "$f" | grep -qaF -f - /proc/[0-9]*/cmdline 2>/dev/null; then continue; fi
  rm -f -- "$f" && printf '%s\n' "$f"
done
true
"""


def remove_unused() -> list[str]:
    """Remove the files named on stdin (one a line) that no process on the host names on its
    command line at that moment; prints the paths removed."""
    return ["sh", "-c", REMOVE_UNUSED_SCRIPT]


# virsh on the host, told which libvirtd: as a user other than root its default is the
# per-user qemu:///session, where the guest is not.
SYSTEM_URI = "qemu:///system"


def serial_console(name: str) -> list[str]:
    """Attach to the guest's serial console (in a terminal on the host); --force takes the
    console over from another session holding it."""
    return ["virsh", "-c", SYSTEM_URI, "console", "--force", name]


# --- rebuild and migrate -----------------------------------------------------------------------


def same_file(path: str, other: str) -> list[str]:
    """Exit 0 if `path` and `other` are one file (hard links of one inode), 1 if not."""
    return ["test", path, "-ef", other]


# The old disk "$1" back at "$2", whatever a rebuild's swap had done: nothing yet (no link),
# the link made (the same file as the disk: the link goes), or the new disk moved in (the link
# is the old disk's only name: renamed back over the disk).
RESTORE_DISK_SCRIPT = (
    'if [ -e "$1" ]; then if [ "$1" -ef "$2" ]; then rm -f -- "$1"; '
    'else mv -f -T -- "$1" "$2"; fi; fi'
)


def restore_disk(old: str, disk: str) -> list[str]:
    """Put a rebuild's old disk `old` (a hard link made before the swap) back at `disk`."""
    return script(RESTORE_DISK_SCRIPT, old, disk)


DISK_INFO_SCRIPT = (
    'for f; do qemu-img info -U --backing-chain --output=json -- "$f" || exit 1; done'
)


def disk_info(disks: Sequence[str]) -> list[str]:
    """`qemu-img info --backing-chain --output=json` of each disk (a JSON list each, top
    image first), concatenated; exit 1 at the first that cannot be read. -U: a running
    guest's disk is read without its lock."""
    return script(DISK_INFO_SCRIPT, *disks)


def existing(paths: Sequence[str]) -> list[str]:
    """Each of `paths` that exists (any kind of file), one a line."""
    return script('for f; do [ -e "$f" ] && echo "$f"; done; true', *paths)


# --- guests' neighbour entries (read.addresses) -----------------------------------------------

# A bridged guest is in the host's neighbour table only once the host has talked to it. One
# UDP datagram to the discard port of every address of each bridge's IPv4 subnet (/22 or
# smaller) makes the kernel ask ARP for each; the guests' answers fill the table, which libvirt
# reads as VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP. bash's /dev/udp sends them without starting
# a process per address and without any tool the host may lack (no ping, arping or fping);
# nothing waits for answers beyond the last 0.2 s.
PROVOKE_NEIGHBOURS_SCRIPT = r"""
ip -o -4 addr show | while read -r _ dev _ cidr _; do
  [ -d "/sys/class/net/$dev/bridge" ] || continue
  len=${cidr#*/}; ip=${cidr%/*}
  [ "$len" -ge 22 ] && [ "$len" -le 30 ] || continue
  IFS=. read -r a b c d <<< "$ip"
  own=$(( (a << 24) | (b << 16) | (c << 8) | d )); size=$(( 1 << (32 - len) ))
  base=$(( own & ~(size - 1) & 0xffffffff ))
  for (( i = 1; i < size - 1; i++ )); do
    x=$(( base + i )); [ "$x" -eq "$own" ] && continue
    echo > "/dev/udp/$(( x >> 24 & 255 )).$(( x >> 16 & 255 )).$(( x >> 8 & 255 )).$(( x & 255 ))/9"
  done 2> /dev/null
done
sleep 0.2
"""


def provoke_neighbours() -> list[str]:
    """Make the host send one datagram to every address of its bridges' IPv4 subnets (/22
    or smaller), so that guests on them enter its neighbour table; ends 0.2 s after."""
    return ["bash", "-c", PROVOKE_NEIGHBOURS_SCRIPT]


def neighbours() -> list[str]:
    """The host's IPv4 neighbour table (`IP dev DEV lladdr MAC STATE` a line)."""
    return ["ip", "-4", "neigh", "show"]


# --- ssh readiness (issue 12, part 4) ----------------------------------------------------------


# Seconds ssh-keyscan waits on a server: a TCG guest's sshd took 2-3 s for one key exchange.
KEYSCAN_TIMEOUT = 5


def ssh_keyscan(address: str, types: Sequence[str]) -> list[str]:
    """The ssh host keys of `types` (ed25519, ecdsa, rsa) the server at `address` presents
    (`HOST TYPE BASE64` lines on stdout; nothing when none answers), asked from the host,
    which reaches guests on its libvirt networks as well as bridged ones."""
    return ["ssh-keyscan", "-T", str(KEYSCAN_TIMEOUT), "-t", ",".join(types), "--", address]
