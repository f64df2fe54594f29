/* usgs.c — placeholder until written. */
