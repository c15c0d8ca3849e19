from engine.system import limits as machine_limits
from engine.system import threads


def test_cgroup_quota_caps_the_usable_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert machine_limits.usable_cpus(cgroup_root=tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert machine_limits.usable_cpus(cgroup_root=tmp_path) >= 1


def test_tightest_thread_limit_is_the_smallest_set_one(tmp_path):
    (tmp_path / "pids.max").write_text("512\n")
    proc = tmp_path / "proc" / "sys" / "kernel"
    proc.mkdir(parents=True)
    (proc / "threads-max").write_text("100000\n")
    limits = machine_limits.thread_limits(cgroup_root=tmp_path, proc_root=tmp_path / "proc")
    assert limits.pids_max == 512 and limits.threads_max == 100000
    assert limits.tightest == 512


def test_env_and_shell_exports_cap_every_pool_the_same_way():
    env = threads.sanitized_env({"PATH": "/bin", "OMP_NUM_THREADS": "128"}, threads=2)
    assert env["PATH"] == "/bin"
    assert all(env[name] == "2" for name in threads.THREAD_VARS)
    lines = threads.shell_exports(2).splitlines()
    assert lines == [f"export {name}=2" for name in threads.THREAD_VARS]
