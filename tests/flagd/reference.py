"""Evaluates tests/flagd/flags.json for generated users with flagd's in-process
reference evaluator (openfeature-flagd-core from PyPI; PYTHONPATH picks the
version) and prints the users and each flag's variant as JSON, for
tests/e2e/flagd_reference.rs to compare with the proxy's evaluation.

    python3 reference.py FLAGS_FILE USERS SEED
"""
import json
import logging
import random
import sys

from openfeature.evaluation_context import EvaluationContext
from openfeature.contrib.tools.flagd.core import FlagdCore

logging.disable(logging.CRITICAL)


def users(n, seed):
    rng = random.Random(seed)
    names = ["ann", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "zoe", "amir"]
    domains = ["example.com", "example.org", "mail.test", "beta.example"]
    out = []
    for i in range(n):
        attrs = {}
        if rng.random() < 0.9:
            attrs["email"] = f"{rng.choice(names)}{rng.randrange(1000)}@{rng.choice(domains)}"
        if rng.random() < 0.8:
            attrs["age"] = rng.choice([rng.randrange(0, 100), float(rng.randrange(0, 100)), -rng.randrange(1, 50), 2**40 + i])
        if rng.random() < 0.7:
            attrs["score"] = rng.choice([round(rng.uniform(-10, 10), 3), 0.5, 1.0, 1e20, 2.5e-7])
        if rng.random() < 0.6:
            attrs["beta"] = rng.random() < 0.5
        if rng.random() < 0.6:
            attrs["device"] = {"os": rng.choice(["ios", "android", "linux"]), "version": rng.randrange(1, 20),
                               "tablet": rng.random() < 0.3, "ratio": rng.choice([1.5, 2.0, 0.75])}
        if rng.random() < 0.5:
            attrs["tags"] = [rng.choice(["a", "b", "c"]) for _ in range(rng.randrange(0, 4))] + [rng.randrange(10)]
        if rng.random() < 0.7:
            attrs["plan"] = rng.choice(["free", "pro", "beta", "canary"])
        if rng.random() < 0.8:
            attrs["version"] = rng.choice(["1.0.0", "1.4.2", "2.0.9", "2.1.0", "3.0.0-rc.1", "v2.2.0", "0.9.0", "bogus"])
        key = rng.choice([f"user-{i}", f"{rng.randrange(10**9)}", "", None]) if rng.random() < 0.1 else f"user-{i}"
        out.append({"targetingKey": key, "attributes": attrs})
    return out


def main():
    path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(path) as f:
        text = f.read()
    core = FlagdCore()
    core.set_flags(text)
    keys = sorted(json.loads(text)["flags"])
    generated = users(n, seed)
    results = {}
    for key in keys:
        variants = []
        for u in generated:
            ctx = EvaluationContext(targeting_key=u["targetingKey"], attributes=u["attributes"])
            try:
                variants.append(core._resolve(key, None, ctx).variant)
            except Exception:
                variants.append(None)
        results[key] = variants
    json.dump({"users": generated, "results": results}, sys.stdout)


main()
