#!/usr/bin/env bash
# `apot levels` end to end: text and JSON output, and exit code 2 with one error line for bad input.
set -u
apot="$1"
fail=0
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

check help 0 "$apot" --help;                          expect help "levels"
check levels-help 0 "$apot" levels --help;            expect levels-help "--bits"
check a4 0 "$apot" levels --bits 4 --kind apot --role activation
expect a4 "k / 48";                                   expect a4 "11/16 +33"
check w4json 0 "$apot" levels --bits 4 --kind apot --role weight --json
expect w4json '"integers":\[-10,-8,-6,-4,-3,-2,-1,0,1,2,3,4,6,8,10\]'
expect w4json '"denominator":10';                     expect w4json '"bits":4'
expect w4json '"role":"weight"';                      expect w4json '"kind":"apot"'
expect w4json '"levels":\[-1(\.0)?,-0\.8'
check a4json 0 "$apot" levels -b 4 --json;            expect a4json '"levels":\[0(\.0)?,0\.020833334,'
check ternary 0 "$apot" levels --bits 2 --role weight --json; expect ternary '"kind":"ternary"'
check s4json 0 "$apot" levels --bits 4 --role activation --signed --json
expect s4json '"integers":\[-10,-8,-6,-4,-3,-2,-1,0,1,2,3,4,6,8,10\]'
expect s4json '"role":"signed_activation"';            expect s4json '"name":"apot-s4"'

check costmb 0 "$apot" cost --arch mobilenet_v2 --kind fp
expect costmb "mobilenet_v2 224x224 fp .*: 0\.3008 G MACs"
check costvgg 0 "$apot" cost --arch vgg16_bn_cifar --json
expect costvgg '"input":32'

check cost 0 "$apot" cost --arch resnet50 --wbits 4 --abits 4 --kind apot
expect cost "864\.[0-9] M FixOPs \(22\.3 % less than uniform's 1112\.[0-9] M\)"
check costjson 0 "$apot" cost --arch resnet18 --wbits 5 --abits 5 --kind pot --json --layers
expect costjson '"fixops":582[0-9]{6}\.'
expect costjson '"name":"layer4.1.conv2"'

for bad in "levels --bits 7" "levels --bits 1" "levels --bits 0" "levels --bits -2" "levels --bits x" \
           "levels --bits 4 --kind lloyd" "levels --bits 4 --role bias" "levels" "nosuchcommand" \
           "levels --bits 9 --kind uniform" "levels --bits 2 --kind ternary --role activation" \
           "levels --bits 4 --role weight --signed" "cost --arch mobilenet_v2 --width-mult 0" \
           "cost --arch resnet20 --width-mult 0.5" "cost --arch vgg16" "cost --wbits 1" "cost --kind lloyd"; do
  # shellcheck disable=SC2086
  check "bad: $bad" 2 "$apot" $bad
  one_line "bad: $bad"
  expect "bad: $bad" "^apot: error: "
done
[ $fail -eq 0 ] && echo "all apot levels checks passed"
exit $fail
