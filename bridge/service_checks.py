"""What ``service install`` checks before it writes a unit: the service must be able to start.

A mistyped ``--config`` would otherwise become a fresh default config owned by root, and a
user that does not exist, or cannot read the config or the venv, or cannot write the storage
folder, would give a service that fails at every restart. The checks run the venv's own
Python *as the service user* (``setpriv``, when installing as root): the kernel then answers
with everything that applies (owner, groups, ACLs, every parent folder's search permission),
which reading permission bits here would only approximate.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .service_manager import ServiceError
from .settings import SETTINGS, SettingsError, SettingSpec, file_values, load_settings


@dataclass(frozen=True)
class ServicePlan:
    """What the unit needs to know: checked paths and the account."""

    config: Path
    user: str
    storage: Path
    python: str
    read_paths: tuple[Path, ...]  # files the service reads besides the config (TLS, password file)


_PROBE = r"""
import json, os, sys, uuid
config, storage, config_folder = sys.argv[1:4]
problems = []
try:
    import bridge.cli  # the venv (interpreter, site-packages, the bridge itself) is readable
except Exception as err:
    problems.append(f"cannot import the bridge from {sys.prefix}: {err}")
for path in [config, *sys.argv[4:]]:
    try:
        open(path, "rb").close()
    except OSError as err:
        problems.append(f"cannot read {path}: {err.strerror}")
probe = os.path.join(storage, f".dicombridge-install-check-{uuid.uuid4().hex}")
try:
    open(probe, "xb").close()
    os.unlink(probe)
except OSError as err:
    problems.append(f"cannot write in the storage folder {storage}: {err.strerror}")
warnings = []
if not os.access(config_folder, os.W_OK | os.X_OK):
    warnings.append(f"cannot write in {config_folder}: settings cannot be saved from the terminal UI "
                    "(edit the file as root instead)")
print(json.dumps([problems, warnings]))
"""


def plan_install(config_path: Path, user: str | None, python: str = sys.executable) -> ServicePlan:
    """Check everything the service needs; raise ServiceError naming the first thing wrong."""
    config = config_path.expanduser().absolute()
    if not config.is_file():
        raise ServiceError(f"config file {config} does not exist (check the --config path; create it by "
                           f"starting dicombridge --config {config} once, or copy an existing one)")
    user = user or getpass.getuser()
    home = _home_of(user)
    try:
        load_settings(config)  # the service would refuse a bad file at every start: refuse it now
    except (SettingsError, OSError) as err:
        raise ServiceError(f"{config}: {err}") from None
    values = file_values(config)
    storage = Path(_expand_for(str(values["general.storage_folder"]), home)).absolute()
    read_paths = tuple(Path(_expand_for(str(values[spec.name]), home)) for spec in SETTINGS
                       if _names_a_file(spec) and values[spec.name])
    return ServicePlan(config=config, user=user, storage=storage, python=python, read_paths=read_paths)


def check_access(plan: ServicePlan) -> list[str]:
    """Create the storage folder if needed, prove the user can use every path (or raise); returns warnings."""
    as_other_user = plan.user != getpass.getuser()
    if as_other_user and os.geteuid() != 0:
        raise ServiceError(f"run as root to install a service for user {plan.user}")
    if not plan.storage.exists():
        plan.storage.mkdir(parents=True, mode=0o700)
        if as_other_user:
            shutil.chown(plan.storage, user=plan.user, group=_group_of(plan.user))
    command = [plan.python, "-I", "-c", _PROBE, str(plan.config), str(plan.storage), str(plan.config.parent),
               *map(str, plan.read_paths)]
    if as_other_user:
        command = ["setpriv", f"--reuid={plan.user}", f"--regid={_group_of(plan.user)}", "--init-groups", "--",
                   *command]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # -I: as the service will, from the venv alone
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, env=env, cwd="/")
    except OSError as err:
        raise ServiceError(f"cannot run {command[0]} to check the access of user {plan.user}: {err}") from None
    try:
        problems, warnings = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        problems, warnings = [f"{plan.python} does not run as user {plan.user}: "
                              + (result.stderr.strip() or str(result.returncode))], []
    if problems:
        raise ServiceError(f"user {plan.user} cannot run the bridge: " + "; ".join(problems))
    return [f"user {plan.user} {warning}" for warning in warnings]


def _names_a_file(spec: SettingSpec) -> bool:
    """TLS certificates and keys, the mail password file: settings checked by ``_existing_file``."""
    return spec.validate.__qualname__.startswith("_existing_file.")


def _home_of(user: str) -> str:
    try:
        import pwd
    except ImportError:  # Windows: accounts are checked by the service manager
        return os.path.expanduser("~")
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        raise ServiceError(f"user {user} does not exist (create it first, e.g. "
                           f"useradd --system --create-home {user})") from None


def _group_of(user: str) -> str:
    import grp
    import pwd

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def _expand_for(path: str, home: str) -> str:
    """``~`` means the service user's home, not the home of whoever runs ``install``."""
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    return os.path.expanduser(path)
