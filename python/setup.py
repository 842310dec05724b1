"""Build hook: puts libshardlm.so inside the package being built.

The library comes from, in this order:
  1. SHARDLM_LIBRARY (a path to a built libshardlm.so), copied as is;
  2. the shardlm source tree around this folder (../CMakeLists.txt): CMake
     builds the `shardlm` target in ../build/python-package and the result is
     copied (SHARDLM_CMAKE_ARGS adds configure flags, e.g. -DSHARDLM_CUDA=OFF).
Otherwise the build stops with a message. The wheel is tagged for this
platform, since it carries a native library.
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


def cmake_build_library():
    if not os.path.exists(os.path.join(SOURCE_TREE, "CMakeLists.txt")):
        raise SystemExit("shardlm: no libshardlm.so to package: set SHARDLM_LIBRARY to a built libshardlm.so, "
                         "or build from the shardlm source tree (python/ inside it)")
    build = os.path.join(SOURCE_TREE, "build", "python-package")
    configure = ["cmake", "-S", SOURCE_TREE, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                 *shlex.split(os.environ.get("SHARDLM_CMAKE_ARGS", ""))]
    subprocess.check_call(configure)
    subprocess.check_call(["cmake", "--build", build, "--target", "shardlm", "-j", str(os.cpu_count() or 2)])
    return os.path.join(build, "libshardlm.so")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        library = os.environ.get("SHARDLM_LIBRARY") or cmake_build_library()
        if not os.path.isfile(library):
            raise SystemExit(f"shardlm: SHARDLM_LIBRARY={library} is not a file")
        target = os.path.join(self.build_lib, "shardlm", "libshardlm.so")
        self.announce(f"copying {library} -> {target}", level=2)
        shutil.copyfile(library, target)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
