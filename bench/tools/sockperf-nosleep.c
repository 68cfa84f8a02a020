/*
 * LD_PRELOAD for the sockperf client (bench e2e): sockperf 3.x sleeps a fixed 2 s between its warm-up and the test
 * (Client::initBeforeLoop: `sleep(2)`), which is most of the wall time of a 1–2 s latency run. This makes sleep()
 * return at once. The server ignores warm-up messages and the client drops the first 400 ms of the test from its
 * statistics either way, so the numbers are the same; usleep/nanosleep (the end-of-test wait) are left alone.
 */
unsigned int sleep(unsigned int seconds) {
  (void)seconds;
  return 0;
}
