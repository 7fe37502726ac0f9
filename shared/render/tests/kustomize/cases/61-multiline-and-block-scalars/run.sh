#!/bin/sh
set -e
echo "hello: world"  # greet

  indented line
