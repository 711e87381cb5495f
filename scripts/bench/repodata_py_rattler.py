"""The baseline of the repodata benchmark: the same request solved through py-rattler
(`rattler.solve`) from the same HTTP channel, with py-rattler's own persistent cache.

Cold runs each start from an empty cache directory; warm runs reuse the last cold run's
directory with a new Gateway each time (as a new process would). Timed in-process.
Prints one JSON object: {"cold": [...], "warm": [...], "packages": N, "version": "..."}.
"""

import argparse
import asyncio
import json
import tempfile
import time
from importlib.metadata import version

import rattler


async def solve(args, cache_dir):
    gateway = rattler.Gateway(
        cache_dir=cache_dir,
        default_config=rattler.SourceConfig(sharded_enabled=args.sharded),
    )
    return await rattler.solve(
        sources=[args.channel],
        specs=args.specs,
        gateway=gateway,
        platforms=["linux-64", "noarch"],
        strategy="highest",
        channel_priority=rattler.ChannelPriority.Strict,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channel", required=True, help="http:// URL of the channel")
    parser.add_argument("--sharded", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-root", required=True)
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    cold, warm, packages, cache = [], [], 0, None
    for _ in range(args.runs):
        cache = tempfile.mkdtemp(dir=args.cache_root)
        start = time.perf_counter()
        packages = len(await solve(args, cache))
        cold.append(time.perf_counter() - start)
    for _ in range(args.runs):
        start = time.perf_counter()
        await solve(args, cache)
        warm.append(time.perf_counter() - start)
    print(json.dumps({"cold": cold, "warm": warm, "packages": packages, "version": version("py-rattler")}))


if __name__ == "__main__":
    asyncio.run(main())
