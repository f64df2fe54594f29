/* service.c — placeholder until written. */
