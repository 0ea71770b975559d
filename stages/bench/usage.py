"""What a measured part cost the machine beyond wall time: page faults and CPU seconds, user
and system (the kernel's share: page faults, zeroing pages)."""

from __future__ import annotations

import resource


def process_usage() -> dict:
    """Page faults (minor + major) and user/system CPU seconds so far, of this process and of
    its children that have been waited for (ffmpeg-cli's processes, stopped decoder processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "page_faults": sum(u.ru_minflt + u.ru_majflt for u in (me, kids)),
        "cpu_user_s": me.ru_utime + kids.ru_utime,
        "cpu_system_s": me.ru_stime + kids.ru_stime,
    }


def usage_since(before: dict) -> dict:
    """process_usage() now minus `before`, with the system share of the CPU seconds: the kernel's
    work (page faults, zeroing pages) next to the process's own."""
    d = {k: v - before[k] for k, v in process_usage().items()}
    return d | {"system_cpu_share": d["cpu_system_s"] / max(1e-9, d["cpu_user_s"] + d["cpu_system_s"])}
