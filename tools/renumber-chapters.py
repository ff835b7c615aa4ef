#!/usr/bin/env python3
"""tools/renumber-chapters.py SHIFT MIN [--dry]

Makes room for a new chapter, or splits one: run from the top of the repository, it turns
every chapter number n >= MIN into n + SHIFT, in keystonelight.hpp's markers and comments
("//> chapter 13", "#if 0 //> chapters 5-14", "(chapter 9)"), in the prose of the READMEs
and docs ("chapter 13", "chapters 9 to 12"), in doctest suite names and filters ("up to
chapter 09", "chapter?13"), in `make learn CHAPTER=N`, and in chapter folder paths; then
it renames the folders chapters/NN-name with NN >= MIN (git mv, highest first). It skips
what `make chapters` generates: run that afterwards. What it cannot decide is left to you:
references to the chapter being split (below MIN) that now belong to its second half, and
the "| N |" cells of README.md's chapter table. --dry lists the files it would change."""
import os, re, subprocess, sys
shift, low = int(sys.argv[1]), int(sys.argv[2])
dry = '--dry' in sys.argv
def m(n): 
    n = int(n)
    return n + shift if n >= low else n
def f(x):  # the number as written, renumbered: "08" stays two digits
    n = int(x)
    if n < low: return x
    return ('%0' + str(len(x)) + 'd') % (n + shift)
files = []
for root, dirs, names in os.walk('.'):
    if root.startswith('./build') or root.startswith('./.git') or root.startswith('./learn'):
        continue
    for n in names:
        p = os.path.join(root, n)
        if n.endswith(('.hpp', '.cpp', '.md', '.sh', '.in', '.txt', '.py', '.cmake', '.svg')) or n in ('Makefile', 'run'):
            if n == 'CHANGES.diff' or (n == 'keystonelight.hpp' and root.startswith('./chapters/')):
                continue  # generated
            files.append(p)
word = r'(?:[Cc]hapters?|CHAPTER|chapter\?|up to chapter|up\?to\?chapter\?)'
changed = 0
for p in files:
    try:
        s = open(p, encoding='utf-8').read()
    except UnicodeDecodeError:
        continue
    t = s
    # Ranges and lists after the word: "chapters 9 to 12", "chapters 5-14", "chapters 3 and 5"
    t = re.sub(r'\b([Cc]hapters) (\d+)(?:( to | and |-|, | or )(\d+))?\b',
               lambda g: '%s %s%s' % (g.group(1), f(g.group(2)),
                                      (g.group(3) + f(g.group(4))) if g.group(3) else ''), t)
    t = re.sub(r'\b([Cc]hapter|[Cc]hapter\?)( ?)(\d+)\b',
               lambda g: '%s%s%s' % (g.group(1), g.group(2), f(g.group(3))), t)
    t = re.sub(r'\bCHAPTER=(\d+)', lambda g: 'CHAPTER=' + f(g.group(1)), t)
    # Folder names: chapters/13-event-loop, ../13-event-loop/, learn/13-event-loop, 13-event-loop.o
    names = sorted(os.listdir('chapters'))
    for n in names:
        mm = re.match(r'(\d\d)-(.*)', n)
        if not mm or int(mm.group(1)) < low: continue
        t = re.sub(r'(?<![\d])%s-%s\b' % (mm.group(1), re.escape(mm.group(2))),
                   '%02d-%s' % (m(mm.group(1)), mm.group(2)), t)
    if t != s:
        changed += 1
        if not dry: open(p, 'w', encoding='utf-8').write(t)
        else: print(p)
print('files changed:', changed)
if not dry:
    for n in sorted(os.listdir('chapters'), reverse=True):
        mm = re.match(r'(\d\d)-(.*)', n)
        if mm and int(mm.group(1)) >= low:
            subprocess.check_call(['git', 'mv', 'chapters/' + n, 'chapters/%02d-%s' % (m(mm.group(1)), mm.group(2))])
