#!/bin/bash
# Session 19 benchmark: the session-18 script unchanged (every model, cold and warm, one and two
# threads; the kernel cache starts empty).
exec bash "$(dirname "$0")/bench18.sh"
