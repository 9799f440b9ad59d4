"""The semantic cache: lookup latency at 10k and 100k entries, exact search against an
HNSW graph (usearch, when installed), the shared store over a real nats-server, and the
hit rate on a small paraphrase set.

    .venv/bin/python bench/semantic_cache.py            # ~2 minutes
    .venv/bin/python bench/semantic_cache.py --quick    # 10k entries only, no NATS part
    .venv/bin/python bench/semantic_cache.py --blas-threads 2   # numpy's default here

Vectors are random unit vectors (the worst case for exact search: nothing is skipped).
The hit rate uses the test suite's deterministic concept embedder
(tests/fakes/concept_embeddings.py), so it measures the cache's pipeline and threshold,
not the quality of a real embedding model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.nats_server import NatsServer  # noqa: E402
from ingress.cache.semantic_index import SemanticIndex, unit  # noqa: E402
from ingress.cache.semantic_store import SemanticStore  # noqa: E402
from ingress.cache.store import CachedAnswer  # noqa: E402
from schemas.usage import TokenUsage  # noqa: E402
from tests.fakes.concept_embeddings import embed  # noqa: E402

FAR = 1e12
QUERIES = 300

# (question, paraphrase that should hit, question sharing words that should miss)
PARAPHRASES = [
    ("What is the capital of France?", "Tell me France's capital city",
     "What is the capital of Spain?"),
    ("Which city is the capital of Germany?", "Germany's capital?",
     "Which city is the capital of France?"),
    ("How do I sort a list in Python?", "Sorting a Python list: how?",
     "How do I reverse a list in Python?"),
    ("How can I sort an array in reverse order in Python?",
     "Python: sort a list descending", "How can I sort an array in Python?"),
    ("How do I reset my password?", "I forgot my password, how to recover it?",
     "How do I delete my account?"),
    ("How do I delete my account?", "Please remove my profile",
     "How do I reset my account password?"),
    ("What's the weather today?", "Weather forecast for today?",
     "What's the population today?"),
    ("What is the population of Spain?", "How many people live in Spain?",
     "What is the population of France?"),
    ("At what temperature does water boil?", "Boiling point of water in degrees?",
     "What is the weather temperature today?"),
    ("How do I get a refund for my purchase?", "I want my money back for an item I bought",
     "How do I get a refund for my account?"),
    ("How do I change my email address?", "Change the e-mail on my account",
     "How do I delete my email?"),
    ("How do you say hello in Spanish?", "Translate hello to Spanish",
     "How do you say hello in German?"),
    ("What time zone is Paris in?", "Which timezone does Paris use?",
     "What time zone is Madrid in?"),
    ("Is it going to rain in Berlin tonight?", "Berlin weather forecast tonight",
     "Is it going to rain in Madrid tonight?"),
    ("What is the capital city of Spain?", "Spain's seat of government city?",
     "What is the capital city of Germany?"),
    ("How many inhabitants does Berlin have?", "Population of Berlin?",
     "How many inhabitants does Paris have?"),
    ("Why does my Python list sort fail?", "Python list sorting error",
     "Why does my password reset fail?"),
    ("Can I get a refund in euros?", "Refund me in euros please",
     "Can I pay in euros?"),
    ("How cold is it in Paris today?", "Paris temperature today",
     "How cold is it in Berlin today?"),
    ("What's the French word for water?", "Translate water into French",
     "What's the German word for water?"),
]


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Samples:
    """Wall time and this thread's CPU time per call, in ms. On a machine shared with
    other work the wall time waits for a core; the CPU time is what a lookup costs."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def timed(self, call: Callable[[], object]) -> object:
        cpu, wall = time.thread_time(), time.perf_counter()
        out = call()
        self.wall.append((time.perf_counter() - wall) * 1000)
        self.cpu.append((time.thread_time() - cpu) * 1000)
        return out

    def figures(self) -> dict[str, float]:
        return {"p50": statistics.median(self.wall), "p99": percentile(self.wall, 99),
                "cpu50": statistics.median(self.cpu), "cpu99": percentile(self.cpu, 99)}


def random_units(count: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, dims), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def exact(total: int, dims: int, per_scope: int, rng: np.random.Generator) -> dict[str, float]:
    vectors = random_units(total, dims, rng)
    index = SemanticIndex(bound=per_scope)
    began = time.perf_counter()
    for i in range(total):
        index.add(f"s{i // per_scope}", f"k{i}", vectors[i], FAR)
    insert_us = (time.perf_counter() - began) / total * 1e6
    scopes = max(total // per_scope, 1)
    queries = random_units(QUERIES, dims, rng)
    samples = Samples()
    for i, query in enumerate(queries):
        samples.timed(partial(index.nearest, f"s{i % scopes}", query, 0.0))
    return {"insert_us": insert_us, **samples.figures(), "mb": total * dims * 4 / 1e6}


def hnsw(total: int, dims: int, rng: np.random.Generator) -> dict[str, float] | None:
    try:
        from usearch.index import Index
    except ImportError:
        return None
    vectors = random_units(total, dims, rng)
    index = Index(ndim=dims, metric="cos", dtype="f32")
    keys = np.arange(total, dtype=np.uint64)
    began = time.perf_counter()
    for start in range(0, total, 1000):  # as entries arrive: in small batches
        index.add(keys[start:start + 1000], vectors[start:start + 1000], threads=1)
    insert_us = (time.perf_counter() - began) / total * 1e6
    # Queries near stored entries (as cache hits are), so recall is measured where it counts.
    picks = rng.integers(0, total, QUERIES)
    noise = random_units(QUERIES, dims, rng) * 0.3
    queries = vectors[picks] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    samples = Samples()
    found = 0
    for query in queries:
        result = samples.timed(partial(index.search, query, 1, threads=1))
        truth = int(np.argmax(vectors @ query))
        found += int(result.keys[0]) == truth  # type: ignore[attr-defined]
    return {"insert_us": insert_us, **samples.figures(), "recall": found / QUERIES}


def exact_recall_check(total: int, dims: int, rng: np.random.Generator) -> float:
    """Exact search finds the true nearest neighbour every time (a check, not a figure)."""
    vectors = random_units(total, dims, rng)
    index = SemanticIndex(bound=total)
    for i in range(total):
        index.add("s", f"k{i}", vectors[i], FAR)
    picks = rng.integers(0, total, 50)
    hits = 0
    for pick in picks:
        query = unit(vectors[pick] + random_units(1, dims, rng)[0] * 0.3)
        assert query is not None
        match = index.nearest("s", query, 0.0)
        hits += match is not None and match.key == f"k{int(np.argmax(vectors @ query))}"
    return hits / len(picks)


async def shared(total: int, dims: int, rng: np.random.Generator) -> dict[str, float]:
    """Entries written through one store to a real nats-server; a second store (another
    replica) syncs them through its watch; lookups are a search plus one KV read."""
    import nats

    answer = CachedAnswer(stored_at=time.time(), provider="openai", usage=TokenUsage(
        prompt_tokens=20, completion_tokens=40),
        response={"choices": [{"index": 0, "message": {"role": "assistant",
                                                      "content": "x" * 600}}]})
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp))
        server.start()
        try:
            writer_nc = await nats.connect(server.url)
            reader_nc = await nats.connect(server.url)
            writer = SemanticStore(writer_nc, bound=total, max_age=3600)
            await writer.start()
            vectors = random_units(total, dims, rng)
            began = time.perf_counter()
            for i in range(total):
                writer.save("scope", f"prompt {i}", vectors[i], answer, 600)
                if i % 500 == 499:
                    await asyncio.sleep(0)
            await writer.drain()
            write_s = time.perf_counter() - began
            reader = SemanticStore(reader_nc, bound=total, max_age=3600)
            began = time.perf_counter()
            await reader.start(timeout=120)
            sync_s = time.perf_counter() - began
            assert len(reader.index) == total, (len(reader.index), total)
            samples: list[float] = []
            picks = rng.integers(0, total, QUERIES)
            for pick in picks:
                query = vectors[pick]
                began = time.perf_counter()
                match = reader.nearest("scope", query)
                assert match is not None
                got = await reader.answer(match.key)
                samples.append((time.perf_counter() - began) * 1000)
                assert got is not None
            await reader.stop()
            await writer.stop()
            await reader_nc.close()
            await writer_nc.close()
        finally:
            server.stop()
    return {"write_s": write_s, "sync_s": sync_s, "p50": statistics.median(samples),
            "p99": percentile(samples, 99)}


def hit_rate() -> list[tuple[float, float, float]]:
    """(threshold, paraphrases that hit, near misses that hit wrongly)."""
    rows = []
    for threshold in (0.8, 0.85, 0.9, 0.95):
        hits = wrong = 0
        for question, paraphrase, other in PARAPHRASES:
            index = SemanticIndex(bound=10)
            stored = unit(embed(question))
            assert stored is not None
            index.add("s", "q", stored, FAR)
            for text, counter in ((paraphrase, "hit"), (other, "wrong")):
                query = unit(embed(text))
                assert query is not None
                match = index.nearest("s", query, 0.0)
                if match is not None and match.similarity >= threshold:
                    if counter == "hit":
                        hits += 1
                    else:
                        wrong += 1
        rows.append((threshold, hits / len(PARAPHRASES), wrong / len(PARAPHRASES)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="numpy's BLAS threads (the ingress uses 1)")
    parser.add_argument("--parts", default="exact,hnsw,shared,hits",
                        help="which parts to run, comma-separated")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    threadpool_limits(limits=args.blas_threads, user_api="blas")
    print(f"BLAS threads: {args.blas_threads}, load average: {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(7)
    sizes = (10_000,) if args.quick else (10_000, 100_000)
    if "exact" in parts:
        exact_part(sizes, rng)
    if "hnsw" in parts:
        hnsw_part(sizes, rng)
    if "shared" in parts and not args.quick:
        shared_part(rng)
    if "hits" in parts:
        hits_part()


def exact_part(sizes: tuple[int, ...], rng: np.random.Generator) -> None:
    print("## Exact cosine (numpy), lookup in one scope")
    print("| entries | dims | per scope | insert µs | lookup p50 ms | p99 ms | CPU p50 ms "
          "| CPU p99 ms | vectors MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for total in sizes:
        for dims in (384, 1536):
            for per_scope in (1000, total):
                r = exact(total, dims, per_scope, rng)
                print(f"| {total:,} | {dims} | {per_scope:,} | {r['insert_us']:.1f} | "
                      f"{r['p50']:.3f} | {r['p99']:.3f} | {r['cpu50']:.3f} | "
                      f"{r['cpu99']:.3f} | {r['mb']:.0f} |")
    print(f"\nexact search recall@1: {exact_recall_check(10_000, 384, rng):.2f}")


def hnsw_part(sizes: tuple[int, ...], rng: np.random.Generator) -> None:
    print("\n## HNSW (usearch), one scope")
    print("| entries | dims | insert µs | lookup p50 ms | p99 ms | CPU p50 ms | CPU p99 ms "
          "| recall@1 |")
    print("|---|---|---|---|---|---|---|---|")
    for total in sizes:
        for dims in (384, 1536) if total <= 10_000 else (384,):  # building is slow
            found = hnsw(total, dims, rng)
            if found is None:
                print("| usearch not installed | | | | | |")
                break
            print(f"| {total:,} | {dims} | {found['insert_us']:.1f} | {found['p50']:.3f} | "
                  f"{found['p99']:.3f} | {found['cpu50']:.3f} | {found['cpu99']:.3f} | "
                  f"{found['recall']:.2f} |")


def shared_part(rng: np.random.Generator) -> None:
    print("\n## Shared store over a real nats-server (one scope, 384 dims)")
    print("| entries | write s | replica sync s | lookup + KV read p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for total in (1_000, 10_000):
        r = asyncio.run(shared(total, 384, rng))
        print(f"| {total:,} | {r['write_s']:.1f} | {r['sync_s']:.1f} | {r['p50']:.3f} | "
              f"{r['p99']:.3f} |")


def hits_part() -> None:
    print(f"\n## Hit rate, {len(PARAPHRASES)} paraphrase pairs, concept embedder")
    print("| threshold | paraphrases hit | near misses hit (wrong) |")
    print("|---|---|---|")
    for threshold, hits, wrong in hit_rate():
        print(f"| {threshold} | {hits:.0%} | {wrong:.0%} |")


if __name__ == "__main__":
    main()
