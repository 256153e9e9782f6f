#!/usr/bin/env python3
"""Where a process's CPU goes, by thread: samples /proc/PID/task/*/stat twice, SECONDS apart,
and prints each thread name's share of a core over that time (threads of one name summed:
the pipeline names an instance's thread `<node>#<i>` (15 characters at most, Linux's limit),
a node's batcher `<node>-batcher`, the server's tokio threads `io`), largest first, and the
total. With --json FILE, the same as JSON.

  python3 benches/thread_cpu.py PID SECONDS [--json FILE]

Linux only; standard library only.
"""
import argparse
import json
import os
import re
import time

TICK = os.sysconf("SC_CLK_TCK")


def sample(pid):
    """{tid: (name, ticks)} for the process's threads now."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended between listdir and open
        # comm is in parentheses and may hold spaces or parentheses itself.
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[tid] = (name, int(fields[11]) + int(fields[12]))  # utime + stime
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pid", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("--json")
    a = p.parse_args()
    if a.seconds <= 0:
        p.error("SECONDS must be more than 0")
    t0, s0 = time.monotonic(), sample(a.pid)
    time.sleep(a.seconds)
    t1, s1 = time.monotonic(), sample(a.pid)
    wall = t1 - t0
    by_name = {}
    for tid, (name, ticks) in s1.items():
        before = s0.get(tid, (name, 0))[1]
        group = re.sub(r"#\d+$", "#*", name)
        cores, count = by_name.get(group, (0.0, 0))
        by_name[group] = (cores + (ticks - before) / TICK / wall, count + 1)
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][0])
    total = sum(c for c, _ in by_name.values())
    for name, (cores, count) in rows:
        print(f"{cores:7.2f} cores  {count:4d} threads  {name}")
    print(f"{total:7.2f} cores  total over {wall:.1f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"pid": a.pid, "seconds": round(wall, 2), "total_cores": round(total, 3),
                       "threads": [{"name": n, "cores": round(c, 3), "count": k}
                                   for n, (c, k) in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
