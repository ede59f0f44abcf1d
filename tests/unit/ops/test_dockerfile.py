"""The Dockerfile, read as ``docker build`` would read it, against the repository and its locks.

No container engine runs here, so the image is never built in the tests; instead the Dockerfile
is parsed into its stages (continuation lines joined, comments dropped, ARGs resolved) and
checked: every COPY and bind mount names something that exists (in the build context and not
left out by .dockerignore, or in an earlier stage that produced it), and every pip command
installs third-party packages only from a lock, with --require-hashes and wheels only. Each
check is also run on a broken copy of the Dockerfile, so it is known to fail when it should.
The pins of the build tools and the locks' agreement with pyproject.toml are checked here too
(docs/decisions/0017-dependency-lock.md).
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
LOCKS = ROOT / "requirements"


@dataclass
class Stage:
    base: str
    name: str
    workdir: str = "/"
    instructions: list[tuple[str, str]] = field(default_factory=list)
    """(instruction, arguments), continuation lines joined, in order."""


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with global ARGs' defaults substituted in FROM lines."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line:
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, f"unreadable FROM: {line}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), match[1])
            stages.append(Stage(base=base, name=match[2] or f"stage-{len(stages)}"))
        else:
            assert stages, f"{instruction} before the first FROM"
            stage = stages[-1]
            if instruction == "WORKDIR":
                stage.workdir = str(PurePosixPath(stage.workdir) / rest)
            stage.instructions.append((instruction, rest))
    return stages


def _options(words: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--flag=value`` options (repeatable) and the remaining words."""
    options: dict[str, list[str]] = {}
    rest = []
    for word in words:
        if word.startswith("--") and "=" in word:
            key, _, value = word[2:].partition("=")
            options.setdefault(key, []).append(value)
        else:
            rest.append(word)
    return options, rest


def _mounts(run: str) -> list[dict[str, str]]:
    options, _ = _options(shlex.split(run))
    return [dict(part.split("=", 1) for part in mount.split(",")) for mount in options.get("mount", [])]


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _made_in(stage: Stage, path: str) -> bool:
    """Whether ``stage`` puts something at ``path``: a COPY destination or a path its RUNs name."""
    target = PurePosixPath(path)
    workdir = PurePosixPath("/")
    for instruction, rest in stage.instructions:
        if instruction == "WORKDIR":
            workdir = workdir / rest
        elif instruction == "COPY":
            _, words = _options(shlex.split(rest))
            dest = workdir / words[-1]
            if target == dest or dest in target.parents or target.parent == dest:
                return True
        elif instruction == "RUN" and re.search(rf"(?<![\w/]){re.escape(path)}(?![\w/])", rest):
            return True
    return False


def context_problems(stages: list[Stage], ignored: list[str]) -> list[str]:
    """What the build would not find: COPY sources, bind-mount sources and stages named."""
    problems = []
    names = [stage.name for stage in stages]
    for index, stage in enumerate(stages):
        earlier = {s.name: s for s in stages[:index]}
        for instruction, rest in stage.instructions:
            if instruction == "COPY":
                options, words = _options(shlex.split(rest))
                sources = words[:-1]
                if "from" in options:
                    (source_stage,) = options["from"]
                    if source_stage not in earlier:
                        problems.append(f"{stage.name}: COPY --from={source_stage}: no earlier stage {names}")
                    continue
                for source in sources:
                    if not (ROOT / source).exists():
                        problems.append(f"{stage.name}: COPY {source}: not in the repository")
                    elif _ignored(source, ignored):
                        problems.append(f"{stage.name}: COPY {source}: left out by .dockerignore")
            elif instruction == "RUN":
                for mount in _mounts(rest):
                    if mount.get("type") != "bind":
                        continue
                    source = mount.get("source", ".")
                    if "from" not in mount:
                        if not (ROOT / source).exists() or _ignored(source, ignored):
                            problems.append(f"{stage.name}: bind mount of {source}: not in the build context")
                    elif mount["from"] not in earlier:
                        problems.append(f"{stage.name}: mount from={mount['from']}: no earlier stage")
                    elif not _made_in(earlier[mount["from"]], source):
                        problems.append(f"{stage.name}: mount {source} from {mount['from']}: not made there")
    return problems


PIP = re.compile(r"(?:^|&&|;)\s*(?:\S*/)?pip3?\s+(install|download|wheel)\s+([^&;]*)")


def pip_commands(stages: list[Stage]) -> list[tuple[str, str, list[str]]]:
    """(stage, verb, words) of every pip install, download and wheel in the RUN lines."""
    found = []
    for stage in stages:
        for instruction, rest in stage.instructions:
            if instruction == "RUN":
                command_line = re.sub(r"^(?:--\S+\s+)*", "", rest)  # RUN's own --mount options
                found += [(stage.name, verb, shlex.split(args)) for verb, args in PIP.findall(command_line)]
    return found


def pip_problems(stages: list[Stage]) -> list[str]:
    """pip commands that would take a package from outside the locks.

    Every ``pip install``/``download``/``wheel`` either installs a lock (``-r requirements/*.lock``
    with ``--require-hashes`` and ``--only-binary :all:``) or the project's own code alone
    (``--no-deps``, and ``--no-build-isolation`` where it builds, so the lock's build tools do).
    """
    problems = []
    for stage, verb, words in pip_commands(stages):
        command = f"{stage}: pip {verb} {' '.join(words)}"
        locks = [words[i + 1] for i, word in enumerate(words[:-1]) if word in {"-r", "--requirement"}]
        if locks:
            if "--require-hashes" not in words:
                problems.append(f"{command}: a lock without --require-hashes")
            if not {"--only-binary=:all:", ":all:"} & set(words):
                problems.append(f"{command}: a lock without --only-binary :all: (an sdist's build)")
            for lock in locks:
                if not re.fullmatch(r"(?:/src/|/|\./)?requirements/\w+\.lock", lock):
                    problems.append(f"{command}: -r {lock} is not one of requirements/*.lock")
        elif "--no-deps" not in words:
            problems.append(f"{command}: neither a lock nor --no-deps (pulls unlocked dependencies)")
        elif verb != "install" and "--no-build-isolation" not in words:
            problems.append(f"{command}: builds with isolation (fetches unlocked build tools)")
        elif verb == "install" and "--no-index" not in words:
            problems.append(f"{command}: installs the project from an index, not the built wheel")
    return problems


def runtime_problems(stages: list[Stage]) -> list[str]:
    """The image's own stage installs runtime.lock, hash-checked, from the wheels built before."""
    runs = " ".join(rest for instruction, rest in stages[-1].instructions if instruction == "RUN")
    problems = []
    if not re.search(r"pip install [^&;]*--require-hashes[^&;]*-r \S*requirements/runtime\.lock", runs):
        problems.append("the runtime stage does not install requirements/runtime.lock with --require-hashes")
    if not re.search(r"pip install [^&;]*--no-index", runs):
        problems.append("the runtime stage installs from an index, not from the build stage's wheels")
    return problems


def test_the_dockerfile_parses_into_its_three_stages() -> None:
    stages = parse(DOCKERFILE.read_text())
    assert [stage.name for stage in stages] == ["build", "fastpath", "stage-2"]
    assert stages[0].base == stages[-1].base
    assert stages[0].base.startswith("python:3.11")
    assert stages[1].base.startswith("rust:")


def test_everything_the_dockerfile_copies_or_mounts_exists() -> None:
    assert context_problems(parse(DOCKERFILE.read_text()), _dockerignore()) == []


def test_every_pip_command_installs_from_the_lock_or_the_project_alone() -> None:
    stages = parse(DOCKERFILE.read_text())
    commands = [(stage, verb) for stage, verb, _ in pip_commands(stages)]
    assert commands == [
        ("build", "install"),  # build.lock: hatchling
        ("build", "download"),  # runtime.lock's wheels
        ("build", "wheel"),  # the connector's own
        ("fastpath", "install"),  # build.lock: maturin
        ("fastpath", "wheel"),  # the fast path's own
        ("stage-2", "install"),  # runtime.lock, from the downloaded wheels
        ("stage-2", "install"),  # the two project wheels
    ]
    assert pip_problems(stages) == []
    assert runtime_problems(stages) == []
    used = set(re.findall(r"requirements/(\w+\.lock)", DOCKERFILE.read_text()))
    assert used == {"build.lock", "runtime.lock"}
    assert all((LOCKS / lock).is_file() for lock in used)


@pytest.mark.parametrize(
    ("old", "new", "check"),
    [
        ("COPY schemas ./schemas", "COPY schemata ./schemata", "context"),
        ("COPY requirements/build.lock requirements/runtime.lock", "COPY requirements/prod.lock", "context"),
        ("source=/wheels,target=/wheels", "source=/dist,target=/wheels", "context"),
        ("from=fastpath,", "from=fast,", "context"),
        ("pip install --require-hashes", "pip install", "pip"),
        ("--require-hashes --only-binary :all: \\\n        -r", "--only-binary :all: -r", "pip"),
        ("pip wheel --no-deps --no-build-isolation", "pip wheel --no-build-isolation", "pip"),
        ("pip wheel --no-deps --no-build-isolation", "pip wheel --no-deps", "pip"),
        ("-r /requirements/runtime.lock", "", "runtime"),
    ],
)
def test_the_checks_catch_a_broken_dockerfile(old: str, new: str, check: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text, f"the Dockerfile changed: update this case ({old!r})"
    stages = parse(text.replace(old, new, 1))
    found = {
        "context": lambda: context_problems(stages, _dockerignore()),
        "pip": lambda: pip_problems(stages),
        "runtime": lambda: runtime_problems(stages) + pip_problems(stages),
    }[check]()
    assert found, f"replacing {old!r} with {new!r} went unnoticed"


# -- the locks and the pins -----------------------------------------------------------------------


def _pins(lock: Path) -> dict[str, str]:
    """name -> version of a lock; every pin must carry hashes."""
    pins = {}
    for block in re.split(r"\n(?=\S)", lock.read_text()):
        first = block.splitlines()[0]
        if first.startswith("#") or not first.strip():
            continue
        match = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+?)(?:\s*;.*?)?\s*\\?$", first)
        assert match, f"{lock.name}: not an exact pin: {first}"
        assert "--hash=sha256:" in block, f"{lock.name}: {first} has no hash"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("runtime.lock", ()), ("dev.lock", ("dev",)), ("bench.lock", ("dev", "bench"))],
)
def test_each_lock_pins_every_declared_dependency_in_range(lock: str, extras: tuple[str, ...]) -> None:
    """A pyproject.toml edit without `make lock` fails here, not in an install."""
    project = _project()["project"]
    declared = [Requirement(spec) for spec in project["dependencies"]]
    for extra in extras:
        declared += [Requirement(spec) for spec in project["optional-dependencies"][extra]]
    pins = _pins(LOCKS / lock)
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {requirement.name} is not locked: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock}: {requirement.name}=={pins[name]} is outside {requirement.specifier}: run `make lock`"
        )


def test_runtime_and_build_locks_hold_the_versions_the_tests_ran_with() -> None:
    dev = _pins(LOCKS / "dev.lock")
    for lock in ("runtime.lock", "build.lock"):
        pins = _pins(LOCKS / lock)
        assert {name: dev.get(name) for name in pins} == pins, f"{lock} differs from dev.lock"


def test_the_build_tools_are_pinned_to_the_locked_versions() -> None:
    build = _pins(LOCKS / "build.lock")
    backends = [_project(), tomllib.loads((ROOT / "fastpath" / "pyproject.toml").read_text())]
    for pyproject in backends:
        for spec in pyproject["build-system"]["requires"]:
            requirement = Requirement(spec)
            (pin,) = requirement.specifier
            assert pin.operator == "==", f"build-system requires {spec}: pin it exactly"
            assert build.get(canonicalize_name(requirement.name)) == pin.version, f"{spec} vs build.lock"


def test_zero_x_libraries_are_ranged_at_patch_precision() -> None:
    """``~=0.28`` admits 0.29, 0.30...: for a 0.x library every minor may break."""
    project = _project()["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    for spec in specs:
        for clause in Requirement(spec).specifier:
            if clause.operator == "~=" and clause.version.startswith("0."):
                assert clause.version.count(".") >= 2, f"{spec}: ~= at patch precision (~=0.x.y)"
        lower = [c.version for c in Requirement(spec).specifier if c.operator in {">=", ">"}]
        upper = [c.version for c in Requirement(spec).specifier if c.operator in {"<", "<="}]
        if lower and upper:  # one major at most, as paramiko>=3.5,<6 was not
            assert int(upper[0].split(".")[0]) - int(lower[0].split(".")[0]) <= 1, spec


# -- the wheel holds no dev tools -----------------------------------------------------------------


def test_the_wheel_leaves_the_devtools_out_and_nothing_it_ships_imports_them_at_import_time() -> None:
    wheel = _project()["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "connector/devtools" in wheel["exclude"]
    offenders = []
    for path in sorted((ROOT / "connector").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[:2] == ("connector", "devtools"):
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: a lazy import is fine
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            if any(name == "connector.devtools" or name.startswith("connector.devtools.") for name in names):
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == [], "the production wheel has no connector/devtools"
