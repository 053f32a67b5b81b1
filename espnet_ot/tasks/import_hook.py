"""Lazy registration: a sys.meta_path finder that registers right after espnet2.tasks.asr is imported.

Installed at interpreter start by the `espnet_ot.pth` file that setup.py puts into site-packages
(regular and editable installs), and by `import espnet_ot`. Costs one string comparison per
import elsewhere; prints nothing.
"""

import sys

# Only `sys` is imported here: this module runs at every interpreter start (importlib.abc alone
# would pull in typing and importlib.resources, ~20 ms), so finder and loader are duck-typed.
TARGET = "espnet2.tasks.asr"


def _register(module) -> None:
    """Default callback: register espnet-ot's classes into the freshly executed module."""
    from espnet_ot.tasks.registration import register

    register(module)


class _PostExecLoader:
    """Delegates to the real loader and runs a callback once the module has executed."""

    def __init__(self, loader, callback) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            self._callback(module)
        except Exception as e:  # never break ESPnet's own import
            import warnings

            warnings.warn(f"espnet_ot: registration into {module.__name__} failed: {e!r}")

    def __getattr__(self, name):
        # get_source, get_filename, is_package, get_resource_reader, ... of the real loader.
        return getattr(self._loader, name)


class PostImportFinder:
    """Finds nothing itself; wraps the loader of one module name so a callback runs after it."""

    def __init__(self, target: str, callback) -> None:
        self.target = target
        self.callback = callback
        self._busy = False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.target or self._busy:
            return None
        self._busy = True
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or getattr(finder, "find_spec", None) is None:
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PostExecLoader(spec.loader, self.callback)
        return spec


def install(target: str = TARGET, callback=None) -> PostImportFinder:
    """Put the finder first on sys.meta_path (once per target); run now if already imported."""
    callback = _register if callback is None else callback
    for finder in sys.meta_path:
        # Compare by name: the hook module may exist twice (e.g. two installs on sys.path).
        if type(finder).__name__ == "PostImportFinder" and getattr(finder, "target", None) == target:
            break
    else:
        finder = PostImportFinder(target, callback)
        sys.meta_path.insert(0, finder)
    module = sys.modules.get(target)
    if module is not None:
        callback(module)
    return finder
