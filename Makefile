# Convenience front door; the build itself is CMake + Ninja (see README).
.PHONY: all demo test build format clean

all: build

build:
	scripts/deps.sh
	cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	ninja -C build

demo:
	scripts/demo.sh

test:
	scripts/test.sh

format:
	scripts/format.sh

clean:
	rm -rf build build-*
