// A header with every kind of marker, read by tests/split-chapters/run.sh.
int always();

//> chapter 2
int from_two();
//< chapter 2

int f() {
#if 0 //> chapters 1-2 (chapter 3 replaces this body)
  return 1;
#endif //< chapters 1-2
  //> chapter 3: the new body
  int x = 3;
  //> chapter 3
  x += 0;  // a nested block of the same chapter
  //< chapter 3
  return x;
  //< chapter 3
}

#if 0 //> chapters 2-2
int only_two();
#endif //< chapters 2-2

int end();
