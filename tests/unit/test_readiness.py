"""mclu.decide.readiness (pure: rules, the choice, console logs) and mclu.act.waiting on
fake hosts."""

from __future__ import annotations

import asyncio

import pytest

from mclu import errors, model
from mclu.act import waiting
from mclu.decide import readiness
from mclu.hosts import fake
from mclu.hosts.session import CommandResult
from mclu.images import guest_text
from tests.builders import guest

RUNNING = model.GuestState.RUNNING

# A busybox guest's console log as virtlogd writes it: CRLF, a colour sequence, the prompt
# without a newline at its end.
TINY_BOOT = (
    "\x1b[0;32m[    0.000000] Linux version 6.1.0-28-amd64\r\n"
    "[    1.2] Run /init as init process\r\n\r\nweb1 login: "
)
PANIC = (
    "[    1.9] Run /init as init process\r\nswitch_root: can't execute '/sbin/init': "
    "No such file or directory\r\n[    2.0] Kernel panic - not syncing: Attempted to "
    "kill init! exitcode=0x00000100\r\n[    2.0] ---[ end Kernel panic - not syncing: "
    "Attempted to kill init! exitcode=0x00000100 ]---\r\n"
)


# --- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("started", readiness.STARTED),
        ("agent", readiness.AGENT),
        ("console:login:", readiness.Rule(readiness.Kind.CONSOLE, "login:")),
        (
            "console:Reached target .*Multi-User",
            readiness.Rule(readiness.Kind.CONSOLE, "Reached target .*Multi-User"),
        ),
        ("console:a:b", readiness.Rule(readiness.Kind.CONSOLE, "a:b")),  # the first colon splits
        ("ssh", readiness.SSH),
    ],
)
def test_rules_parse_and_print_back(text: str, rule: readiness.Rule) -> None:
    assert readiness.parse(text) == rule
    assert str(rule) == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("console:", "needs a regular expression"),
        ("console:(", "is not a regular expression"),
        ("ssh:22", "unknown readiness rule 'ssh:22'"),
        ("sshd", "use console:REGEX, agent, ssh or started"),
        ("agent:x", "unknown readiness rule"),
        ("", "unknown readiness rule"),
        ("Console:login:", "unknown readiness rule"),
    ],
)
def test_bad_rules_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        readiness.parse(text)


def test_the_rule_a_guest_passed_is_read_back_and_started_when_unknown() -> None:
    assert readiness.recorded("console:login:") == readiness.LOGIN
    assert readiness.recorded("") == readiness.STARTED  # built before readiness, or --no-wait
    assert readiness.recorded("console:(") == readiness.STARTED  # edited by hand


def test_without_a_rule_the_strongest_check_the_guest_supports_is_chosen() -> None:
    both = model.GuestTraits(agent=True, serial_login=True)
    assert readiness.choose(None, both) == readiness.Choice(readiness.AGENT, declared=False)
    assert readiness.choose(None, model.GuestTraits(serial_login=True)).rule == readiness.LOGIN
    assert readiness.choose(None, model.GuestTraits()).rule == readiness.STARTED
    assert readiness.choose(None, None).rule == readiness.STARTED  # the disk was not looked at


def test_ssh_is_the_default_for_a_guest_with_an_ssh_server_keys_and_an_address() -> None:
    keys = ("ssh-ed25519 AAAA",)
    tiny = model.GuestTraits(serial_login=True, host_keys=keys, ssh_server="dropbear")
    debian = model.GuestTraits(agent=True, serial_login=True, host_keys=keys, ssh_server="sshd")
    for traits in (tiny, debian):
        for nics in (("bridge:br0",), ("network:default",), ("user", "bridge:br0")):
            assert readiness.choose(None, traits, nics) == readiness.Choice(
                readiness.SSH, declared=False
            )
    # QEMU's user networking (or no NIC): no address its host can reach, today's default.
    assert readiness.choose(None, tiny, ("user",)).rule == readiness.LOGIN
    assert readiness.choose(None, debian, ("none",)).rule == readiness.AGENT
    assert readiness.choose(None, tiny).rule == readiness.LOGIN
    # No ssh server, or no host keys mclu gave it (nothing the rule could check): not ssh.
    no_server = model.GuestTraits(serial_login=True, host_keys=keys)
    no_keys = model.GuestTraits(serial_login=True, ssh_server="dropbear")
    assert readiness.choose(None, no_server, ("bridge:br0",)).rule == readiness.LOGIN
    assert readiness.choose(None, no_keys, ("bridge:br0",)).rule == readiness.LOGIN
    # The template's own rule still wins.
    assert readiness.choose("console:login:", tiny, ("bridge:br0",)) == readiness.Choice(
        readiness.LOGIN, declared=True
    )
    assert readiness.choose("started", debian, ("network:default",)).rule == readiness.STARTED


def test_addressable_networks_are_bridges_and_libvirt_networks() -> None:
    assert readiness.addressable(("bridge:br0",)) and readiness.addressable(("network:nat",))
    assert not readiness.addressable(("user",)) and not readiness.addressable(("none",))
    assert not readiness.addressable(())


def test_a_declared_rule_is_never_replaced_by_a_detected_one() -> None:
    both = model.GuestTraits(agent=True, serial_login=True)
    assert readiness.choose("console:ready$", both) == readiness.Choice(
        readiness.Rule(readiness.Kind.CONSOLE, "ready$"), declared=True
    )
    assert readiness.choose("started", both).rule == readiness.STARTED
    assert readiness.STARTED.strength < readiness.LOGIN.strength < readiness.AGENT.strength


# --- console logs -----------------------------------------------------------------------------


def test_console_lines_are_what_a_person_reads() -> None:
    assert readiness.console_lines(TINY_BOOT) == [
        "[    0.000000] Linux version 6.1.0-28-amd64",
        "[    1.2] Run /init as init process",
        "web1 login:",
    ]


def test_the_login_rule_matches_a_prompt_and_nothing_before_it() -> None:
    assert readiness.console_matches(readiness.LOGIN, TINY_BOOT)
    assert not readiness.console_matches(readiness.LOGIN, TINY_BOOT.rpartition("\r\n")[0])
    assert readiness.console_matches(readiness.parse("console:^Welcome"), "x\r\nWelcome\r\n")
    assert not readiness.console_matches(readiness.parse("console:^Welcome"), "x Welcome\n")


def test_a_kernel_panic_is_found_with_its_reason() -> None:
    assert readiness.panicked(PANIC) == (
        "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
    )
    assert readiness.panicked(TINY_BOOT) is None


# --- what the disk says (guest_text) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("inittab", "configs", "systemd", "enabled", "expected"),
    [
        ("ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n", [], False, False, True),  # busybox
        ("T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n", [], False, False, True),  # sysvinit
        ("#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n", [], False, False, False),  # off
        ("tty1::respawn:/sbin/getty 38400 tty1\n", [], False, False, False),
        (
            "",
            ["APPEND root=UUID=x ro console=tty0 console=ttyS0,115200n8 quiet\n"],
            True,
            False,
            True,
        ),  # systemd's getty generator follows the kernel's console
        ("", ["APPEND root=UUID=x ro console=tty0 console=ttyS0,115200n8\n"], False, False, False),
        ("", ['GRUB_CMDLINE_LINUX="console=ttyS10"\n'], True, False, False),
        ("", [], True, True, True),  # serial-getty@ttyS0 enabled by hand
        ("", [], True, False, False),
    ],
)
def test_a_serial_login_prompt_is_found_from_init_and_boot_configuration(
    inittab: str, configs: list[str], systemd: bool, enabled: bool, expected: bool
) -> None:
    assert (
        guest_text.serial_login(
            inittab=inittab, boot_configs=configs, systemd=systemd, serial_getty_enabled=enabled
        )
        is expected
    )


# --- waiting, on a fake host ------------------------------------------------------------------


def wait(host: fake.FakeHost, rule: readiness.Rule, timeout: float = 0) -> waiting.Ready:
    cluster = fake.FakeCluster([host])

    async def run() -> waiting.Ready:
        async with cluster.open(cluster.spec(host.name)) as session:
            return await waiting.wait(session, "web1", rule, timeout, poll=0)

    return asyncio.run(run())


def test_a_guest_whose_console_shows_the_prompt_is_ready() -> None:
    host = fake.FakeHost("a", guests={"web1": guest()}, consoles={"web1": TINY_BOOT})
    assert wait(host, readiness.LOGIN).rule == readiness.LOGIN


def test_a_guest_whose_agent_answers_is_ready_and_one_without_is_not() -> None:
    host = fake.FakeHost("a", guests={"web1": guest()}, agents={"web1"})
    assert wait(host, readiness.AGENT).rule == readiness.AGENT
    host.agents.clear()
    with pytest.raises(errors.NotReady) as caught:
        wait(host, readiness.AGENT)
    assert caught.value.reason == "not ready within 0 s"
    assert caught.value.console == ()
    assert str(caught.value) == (
        "a: web1 did not become ready (agent): not ready within 0 s; its console showed nothing"
    )


def test_a_panic_fails_at_once_quoting_the_console() -> None:
    host = fake.FakeHost("a", guests={"web1": guest()}, consoles={"web1": PANIC})
    with pytest.raises(errors.NotReady) as caught:
        wait(host, readiness.LOGIN, timeout=3600)
    assert caught.value.reason.startswith("its kernel panicked (Kernel panic - not syncing: ")
    assert caught.value.console[-1].startswith("[    2.0] ---[ end Kernel panic")
    assert str(caught.value).endswith(" / ".join(caught.value.console[-4:]))


def test_a_guest_that_stopped_will_not_become_ready() -> None:
    host = fake.FakeHost(
        "a",
        guests={"web1": guest(state=model.GuestState.SHUTOFF)},
        consoles={"web1": "booting\r\n"},
    )
    with pytest.raises(
        errors.NotReady,
        match=r"\(started\): it stopped \(shut off\); its "
        r"console ends: booting$",
    ):
        wait(host, readiness.STARTED, timeout=3600)


def test_started_is_ready_as_soon_as_qemu_runs() -> None:
    host = fake.FakeHost("a", guests={"web1": guest()})
    assert wait(host, readiness.STARTED, timeout=3600).rule == readiness.STARTED


# --- the ssh rule: the key the guest's server presents ------------------------------------------

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII6a2TtfkkCjORl6WvknxwmouFoVbZUBGX3PfC94etFQ"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOTHERKEYOTHERKEYOTHERKEYOTHERKEYOTHERKEY0"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCgYV"
KEYSCAN = f"# 10.0.0.5:22 SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\n10.0.0.5 {ED25519}\n"
SCAN_ARGV = ("ssh-keyscan", "-T", "5", "-t", "ed25519", "--", "10.0.0.5")


def test_presented_keys_are_read_from_ssh_keyscan_without_its_comments() -> None:
    assert readiness.presented_keys(KEYSCAN) == (ED25519,)
    assert readiness.presented_keys("") == ()


@pytest.mark.parametrize(
    ("presented", "recorded", "verdict"),
    [
        ((ED25519,), (RSA, ED25519), None),
        ((OTHER,), (ED25519,), "its ssh server presents another host key than mclu gave it"),
        ((), (ED25519,), "no ssh server answered"),
        ((ED25519,), (), "mclu recorded no ssh host keys for it"),
    ],
)
def test_ssh_verdict(
    presented: tuple[str, ...], recorded: tuple[str, ...], verdict: str | None
) -> None:
    assert readiness.ssh_verdict(presented, recorded) == verdict


def test_keyscan_asks_for_ed25519_alone_when_mclu_recorded_one() -> None:
    assert readiness.keyscan_types((RSA, ED25519)) == ("ed25519",)
    assert readiness.keyscan_types((RSA, "ecdsa-sha2-nistp256 AAAA")) == ("ecdsa", "rsa")


def ssh_host(keyscan: str) -> fake.FakeHost:
    """web1 on a with a known address, whose ssh server presents what `keyscan` says."""
    host = fake.FakeHost("a", guests={"web1": guest()})
    host.addresses["web1"] = (
        model.Address(ip="10.0.0.5", family=4, source=model.AddressSource.LEASE),
    )
    host.commands[SCAN_ARGV] = CommandResult(SCAN_ARGV, 0, keyscan.encode())
    return host


def wait_ssh(host: fake.FakeHost, keys: tuple[str, ...]) -> waiting.Ready:
    cluster = fake.FakeCluster([host])

    async def run() -> waiting.Ready:
        async with cluster.open(cluster.spec(host.name)) as session:
            return await waiting.wait(session, "web1", readiness.SSH, 0, poll=0, host_keys=keys)

    return asyncio.run(run())


def test_a_guest_whose_server_presents_the_key_mclu_gave_it_is_ready() -> None:
    host = ssh_host(KEYSCAN)
    assert wait_ssh(host, (RSA, ED25519)).rule == readiness.SSH
    assert SCAN_ARGV in host.ran  # asked from its host


def test_a_guest_presenting_another_key_is_not_ready_and_the_error_says_so() -> None:
    with pytest.raises(errors.NotReady) as caught:
        wait_ssh(ssh_host(KEYSCAN), (OTHER,))
    assert caught.value.reason == (
        "not ready within 0 s (10.0.0.5: its ssh server presents another host key than mclu "
        "gave it)"
    )


def test_a_guest_whose_sshd_never_answers_is_not_ready() -> None:
    with pytest.raises(errors.NotReady, match=r"10\.0\.0\.5: no ssh server answered"):
        wait_ssh(ssh_host(""), (ED25519,))


def test_a_guest_without_an_address_is_not_ready_by_ssh_and_says_why() -> None:
    host = ssh_host(KEYSCAN)
    host.addresses.clear()
    with pytest.raises(errors.NotReady, match=r"\(no address known \(no lease, "):
        wait_ssh(host, (ED25519,))


def test_a_guest_whose_console_shows_a_login_prompt_but_whose_sshd_is_down_is_not_ready() -> None:
    host = ssh_host("")
    host.consoles["web1"] = TINY_BOOT
    with pytest.raises(errors.NotReady, match=r"10\.0\.0\.5: no ssh server answered"):
        wait_ssh(host, (ED25519,))


def test_a_guest_mclu_wrote_no_host_keys_for_fails_an_ssh_wait_at_once() -> None:
    host = ssh_host(KEYSCAN)
    cluster = fake.FakeCluster([host])

    async def run() -> waiting.Ready:
        async with cluster.open(cluster.spec(host.name)) as session:
            return await waiting.wait(session, "web1", readiness.SSH, 3600, poll=0)

    with pytest.raises(errors.NotReady) as caught:
        asyncio.run(run())
    assert caught.value.reason == "mclu recorded no ssh host keys for it"
    assert SCAN_ARGV not in host.ran  # nothing to check its answer against: not asked


def test_a_panic_fails_an_ssh_wait_at_once_too() -> None:
    host = ssh_host("")
    host.consoles["web1"] = PANIC
    cluster = fake.FakeCluster([host])

    async def run() -> waiting.Ready:
        async with cluster.open(cluster.spec(host.name)) as session:
            return await waiting.wait(
                session, "web1", readiness.SSH, 3600, poll=0, host_keys=(ED25519,)
            )

    with pytest.raises(errors.NotReady) as caught:
        asyncio.run(run())
    assert caught.value.reason.startswith("its kernel panicked (Kernel panic - not syncing: ")
    assert SCAN_ARGV not in host.ran  # told by its console before any scan
