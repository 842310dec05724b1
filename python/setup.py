"""Build hook: puts libshardlm.so and the shardlm executable inside the package being built.

The executable (shardlm/bin/shardlm) is what the worker ranks of a
multi-rank engine run (tensor_parallel_size x pipeline_parallel_size > 1);
it links the library statically, so it runs from wherever it is installed.
Both come from, in this order:
  1. SHARDLM_LIBRARY (a path to a built libshardlm.so), copied as is, with
     SHARDLM_EXECUTABLE (a path to the shardlm built with it), else the
     `shardlm` beside that library;
  2. the shardlm source tree around this folder (../CMakeLists.txt): CMake
     builds the `shardlm` and `shardlm_cli` targets in ../build/python-package
     and the results are copied (SHARDLM_CMAKE_ARGS adds configure flags, e.g.
     -DSHARDLM_CUDA=OFF).
Otherwise the build stops with a message. The wheel is tagged for this
platform, since it carries native code.
"""

import os
import shlex
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_TREE = os.path.dirname(HERE)


def cmake_build():
    """Builds the library and the executable with CMake; their paths."""
    if not os.path.exists(os.path.join(SOURCE_TREE, "CMakeLists.txt")):
        raise SystemExit("shardlm: no libshardlm.so to package: set SHARDLM_LIBRARY to a built libshardlm.so, "
                         "or build from the shardlm source tree (python/ inside it)")
    build = os.path.join(SOURCE_TREE, "build", "python-package")
    configure = ["cmake", "-S", SOURCE_TREE, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                 *shlex.split(os.environ.get("SHARDLM_CMAKE_ARGS", ""))]
    subprocess.check_call(configure)
    subprocess.check_call(["cmake", "--build", build, "--target", "shardlm", "shardlm_cli",
                           "-j", str(os.cpu_count() or 2)])
    return os.path.join(build, "libshardlm.so"), os.path.join(build, "shardlm")


def prebuilt(library):
    """SHARDLM_LIBRARY and its executable: SHARDLM_EXECUTABLE, else the shardlm beside the library."""
    if not os.path.isfile(library):
        raise SystemExit(f"shardlm: SHARDLM_LIBRARY={library} is not a file")
    exe = os.environ.get("SHARDLM_EXECUTABLE") or os.path.join(os.path.dirname(os.path.abspath(library)), "shardlm")
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise SystemExit(f"shardlm: no shardlm executable at {exe} to package beside SHARDLM_LIBRARY (worker ranks "
                         "run it): set SHARDLM_EXECUTABLE to the shardlm built with that library, or unset "
                         "SHARDLM_LIBRARY to build both")
    return library, exe


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        library = os.environ.get("SHARDLM_LIBRARY")
        library, exe = prebuilt(library) if library else cmake_build()
        package = os.path.join(self.build_lib, "shardlm")
        self._copy_in(library, os.path.join(package, "libshardlm.so"))
        os.makedirs(os.path.join(package, "bin"), exist_ok=True)
        self._copy_in(exe, os.path.join(package, "bin", "shardlm"))
        os.chmod(os.path.join(package, "bin", "shardlm"), 0o755)

    def _copy_in(self, src, dst):
        self.announce(f"copying {src} -> {dst}", level=2)
        shutil.copyfile(src, dst)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
