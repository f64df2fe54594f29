/* httpd.c — placeholder until written. */
