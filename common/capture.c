/* capture.c — placeholder until written. */
