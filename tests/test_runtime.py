"""Process set-up (recnet_jax.runtime): the huge-page malloc tunable and the commands' re-execution
with it."""

import os
import pathlib
import subprocess
import sys

import pytest

from recnet_jax import runtime

REPO = pathlib.Path(__file__).resolve().parents[1]
THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
needs_thp = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not THP.exists() or "[never]" in THP.read_text(),
    reason="transparent huge pages are off or absent here")


@needs_thp
def test_huge_pages_env_adds_the_tunable_once_and_keeps_the_others():
    env = runtime.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + runtime.HUGE_PAGES_TUNABLE
    assert env["A"] == "1"
    assert runtime.huge_pages_env(env) == env                          # already there: unchanged
    assert runtime.huge_pages_env({})["GLIBC_TUNABLES"] == runtime.HUGE_PAGES_TUNABLE
    off = {runtime.ENV_HUGE_PAGES: "0"}
    assert "GLIBC_TUNABLES" not in runtime.huge_pages_env(off)
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}                 # the user's own choice wins
    assert runtime.huge_pages_env(mine) == mine


@needs_thp
def test_a_command_reexecutes_itself_once_with_the_tunable():
    code = ("import os, sys; from recnet_jax import runtime; print('start', flush=True); "
            "runtime.use_huge_pages(); print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", runtime.ENV_HUGE_PAGES)}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code, "x", "--y=1"], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout.splitlines()
    # Two starts (the re-execution) and one end, with the tunable and the same arguments.
    assert out == ["start", "start", f"{runtime.HUGE_PAGES_TUNABLE} ['x', '--y=1']"]
    env[runtime.ENV_HUGE_PAGES] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.splitlines()
    assert out == ["start", "None []"]
