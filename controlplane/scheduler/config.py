"""The scheduler's configuration file: which plugins run, their weights and arguments.

The file is kube-scheduler's KubeSchedulerConfiguration (v1), of which Flotilla
reads the part it implements; a key it does not know is an error rather than
silently ignored. With no file, one profile named default-scheduler runs every
plugin in `registry.DEFAULT_PLUGINS` with LeastAllocated scoring. Binpacking:

    apiVersion: kubescheduler.config.k8s.io/v1
    kind: KubeSchedulerConfiguration
    profiles:
    - schedulerName: default-scheduler
      plugins:
        multiPoint:                 # enable/disable a plugin at every point it implements
          disabled: [{name: NodeResourcesBalancedAllocation}]
        score:                      # weights (0 or disabled: no scoring by that plugin)
          enabled: [{name: NodeResourcesFit, weight: 5}]
      pluginConfig:
      - name: NodeResourcesFit
        args:
          scoringStrategy:
            type: MostAllocated     # or LeastAllocated (the default)
            resources: [{name: cpu, weight: 1}, {name: memory, weight: 1}]

A pod is scheduled by the profile whose schedulerName its spec.schedulerName names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.scheduler import framework, registry

DEFAULT_SCHEDULER_NAME = "default-scheduler"
API_VERSION = "kubescheduler.config.k8s.io/v1"
# kube-scheduler waits 1 s, doubling to 10 s; a shorter first wait lets a pod that
# just missed a node land within a second of the node appearing.
DEFAULT_INITIAL_BACKOFF = 0.25
DEFAULT_MAX_BACKOFF = 10.0


class ConfigError(ValueError):
    """The configuration file is not one the scheduler can run."""


@dataclass
class Profile:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    plugins: list[str] = field(default_factory=lambda: list(registry.DEFAULT_PLUGINS))
    weights: dict[str, int] = field(default_factory=lambda: dict(registry.DEFAULT_WEIGHTS))
    args: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SchedulerConfig:
    profiles: list[Profile] = field(default_factory=lambda: [Profile()])
    pod_initial_backoff: float = DEFAULT_INITIAL_BACKOFF
    pod_max_backoff: float = DEFAULT_MAX_BACKOFF
    # Bindings in flight at once: decisions run ahead while the apiserver catches up. On the
    # 2-core bench 128 did best of 32, 64 and 128 (docs/scheduler.md).
    parallelism: int = 128


def load(path: str | Path | None) -> SchedulerConfig:
    if path is None:
        return SchedulerConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read scheduler config {path}: {err}") from err
    return parse(data)


def parse(data: dict[str, Any]) -> SchedulerConfig:
    _known(data, {"apiVersion", "kind", "profiles", "podInitialBackoffSeconds", "podMaxBackoffSeconds",
                  "parallelism"}, "")
    if data.get("kind", "KubeSchedulerConfiguration") != "KubeSchedulerConfiguration":
        raise ConfigError(f"kind must be KubeSchedulerConfiguration, not {data.get('kind')!r}")
    config = SchedulerConfig(
        profiles=[_profile(p, i) for i, p in enumerate(data.get("profiles") or [{}])],
        pod_initial_backoff=float(data.get("podInitialBackoffSeconds", DEFAULT_INITIAL_BACKOFF)),
        pod_max_backoff=float(data.get("podMaxBackoffSeconds", DEFAULT_MAX_BACKOFF)),
        parallelism=int(data.get("parallelism", 128)))
    names = [p.scheduler_name for p in config.profiles]
    if len(set(names)) != len(names):
        raise ConfigError(f"profiles: duplicate schedulerName in {names}")
    return config


def _known(data: object, keys: set[str], path: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping")
    unknown = sorted(set(data) - keys)
    if unknown:
        raise ConfigError(f"{path or 'config'}: unknown field(s) {', '.join(unknown)}")


def _profile(data: dict[str, Any], index: int) -> Profile:
    path = f"profiles[{index}]"
    _known(data, {"schedulerName", "plugins", "pluginConfig"}, path)
    profile = Profile(scheduler_name=data.get("schedulerName") or DEFAULT_SCHEDULER_NAME)
    plugins = data.get("plugins") or {}
    _known(plugins, {"multiPoint", "score"}, f"{path}.plugins")
    multi = plugins.get("multiPoint") or {}
    for entry in multi.get("disabled") or []:
        name = _plugin_name(entry, f"{path}.plugins.multiPoint.disabled")
        profile.plugins = [] if name == "*" else [p for p in profile.plugins if p != name]
    for entry in multi.get("enabled") or []:
        name = _plugin_name(entry, f"{path}.plugins.multiPoint.enabled")
        if name not in profile.plugins:
            profile.plugins.append(name)
        if "weight" in entry:
            profile.weights[name] = int(entry["weight"])
    score = plugins.get("score") or {}
    for entry in score.get("disabled") or []:
        name = _plugin_name(entry, f"{path}.plugins.score.disabled")
        for plugin in registry.REGISTRY if name == "*" else [name]:
            profile.weights[plugin] = 0
    for entry in score.get("enabled") or []:
        name = _plugin_name(entry, f"{path}.plugins.score.enabled")
        if name not in profile.plugins:
            profile.plugins.append(name)
        profile.weights[name] = int(entry.get("weight", 1))
    for i, entry in enumerate(data.get("pluginConfig") or []):
        name = _plugin_name(entry, f"{path}.pluginConfig[{i}]")
        profile.args[name] = dict(entry.get("args") or {})
    return profile


def _plugin_name(entry: object, path: str) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"{path}: each entry needs a name")
    name: str = entry["name"]
    if name != "*" and name not in registry.REGISTRY:
        raise ConfigError(f"{path}: unknown plugin {name!r} (known: {', '.join(registry.REGISTRY)})")
    return name


def build_framework(profile: Profile, handle: framework.Handle, *, seed: int | None = None) -> framework.Framework:
    """Instantiate a profile's plugins through the registry, in the profile's order."""
    plugins: list[framework.Plugin] = []
    for name in profile.plugins:
        try:
            plugins.append(registry.REGISTRY[name](profile.args.get(name, {}), handle))
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"profile {profile.scheduler_name}: plugin {name}: {err}") from err
    return framework.Framework(scheduler_name=profile.scheduler_name, plugins=plugins,
                               weights=profile.weights, seed=seed)
