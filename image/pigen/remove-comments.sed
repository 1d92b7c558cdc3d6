# As pi-gen's scripts/remove-comments.sed: deletes comments and collapses whitespace in
# NN-packages files.
:loop
N
$ !b loop
s/#[^\n]*//g
s/[[:space:]]\{1,\}/ /g
