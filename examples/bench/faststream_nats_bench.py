"""Anchor benchmark: FastStream (Python) NATS subscribers, the consumers of kv_bench's messaging
workloads (`core-publish`, `request-reply`, `js-pull`), run by kv_bench as a child process.

Modes:
  core N         : a core subscriber on `bench.msg.core`; kv_bench publishes N messages once it
                   is ready, then closes stdin. Timed from the first message handled to the Nth; a
                   message that never arrives (nothing for 3 s) is reported as lost.
  reply          : a responder on `svc.echo` returning the request's body, until stdin is closed;
                   kv_bench times the round trips.
  pull N BATCH   : a durable pull consumer (`bench`) of the stream `BENCH_MSG` (made and filled by
                   kv_bench), `pull_sub=PullSub(BATCH)`, acknowledging after each call (the default
                   policy). Timed from the first message handled until the server reports every
                   one acknowledged.

Protocol (kv_bench's `serve.rs`): prints `{"ready": true}` once subscribed, then one JSON line
with the result: CPU time (from before the broker starts) and peak RSS of this process.
"""
import asyncio, json, os, resource, sys, time

from faststream.nats import JStream, NatsBroker, PullSub

URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
STALL = 3.0


def usage() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss


def ready() -> None:
    print(json.dumps({"ready": True}), flush=True)


class Arrivals:
    def __init__(self, n: int):
        self.n, self.seen, self.first, self.last = n, 0, None, None
        self.done = asyncio.Event()

    def handled(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.seen += 1
        if self.seen == self.n:
            self.last = time.perf_counter()
            self.done.set()

    async def wait(self) -> None:
        # The stall clock runs once a message came or kv_bench closed stdin (done sending).
        parent_done = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        seen, moved, started = 0, time.perf_counter(), time.perf_counter()
        stall_clock = False
        while not self.done.is_set():
            try:
                await asyncio.wait_for(self.done.wait(), 0.2)
            except asyncio.TimeoutError:
                if self.seen != seen or (not stall_clock and parent_done.done()):
                    stall_clock = True
                    seen, moved = self.seen, time.perf_counter()
                elif stall_clock and time.perf_counter() - moved >= STALL:
                    self.last = moved
                    return
                if time.perf_counter() - started > 300:
                    raise TimeoutError("no message arrived within 300 s")


def counted(mode: str, n: int, arrivals: Arrivals, cpu0: float, end: float) -> dict:
    cpu, rss = usage()
    cpu -= cpu0
    took = end - (arrivals.first or end)
    return {"impl": "faststream-py", "mode": mode, "n": n, "handled": arrivals.seen,
            "lost": n - arrivals.seen, "seconds": took,
            "msgs_per_s": arrivals.seen / took if took > 0 else 0.0,
            "cpu_s": cpu, "cpu_us_per_msg": cpu * 1e6 / max(arrivals.seen, 1),
            "peak_rss_kib": rss}


async def core(n: int) -> dict:
    cpu0, _ = usage()
    broker = NatsBroker(URL, logger=None)
    arrivals = Arrivals(n)

    @broker.subscriber("bench.msg.core")
    async def handler(msg: str):
        arrivals.handled()

    await broker.start()
    await broker.connection.flush()
    ready()
    await arrivals.wait()
    result = counted("core", n, arrivals, cpu0, arrivals.last or time.perf_counter())
    await broker.stop()
    return result


async def reply() -> dict:
    cpu0, _ = usage()
    broker = NatsBroker(URL, logger=None)

    @broker.subscriber("svc.echo")
    async def echo(body: bytes) -> bytes:
        return body

    await broker.start()
    await broker.connection.flush()
    ready()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    cpu, rss = usage()
    await broker.stop()
    return {"impl": "faststream-py", "mode": "reply", "cpu_s": cpu - cpu0, "peak_rss_kib": rss}


async def pull(n: int, batch: int) -> dict:
    cpu0, _ = usage()
    broker = NatsBroker(URL, logger=None)
    arrivals = Arrivals(n)

    @broker.subscriber("bench.js.pull", stream=JStream("BENCH_MSG", declare=False),
                       durable="bench", pull_sub=PullSub(batch_size=batch))
    async def handler(msg: str):
        arrivals.handled()

    await broker.start()
    ready()
    await arrivals.wait()
    js = broker.connection.jetstream()
    started = time.perf_counter()
    while True:
        info = await js.consumer_info("BENCH_MSG", "bench")
        if info.num_ack_pending == 0 and (info.num_pending == 0 or arrivals.seen < n):
            break
        if time.perf_counter() - started > 300:
            raise TimeoutError(f"{info.num_ack_pending} acknowledgements still pending")
        await asyncio.sleep(0.001)
    result = counted("pull", n, arrivals, cpu0, time.perf_counter())
    await broker.stop()
    return result


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "core":
        r = asyncio.run(core(int(sys.argv[2])))
    elif mode == "reply":
        r = asyncio.run(reply())
    else:
        r = asyncio.run(pull(int(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps(r), flush=True)
