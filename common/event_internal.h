/* event_internal.h — libqs-private parts of the event codec (event.c, event_fast.c). */
#ifndef QS_EVENT_INTERNAL_H
#define QS_EVENT_INTERNAL_H

#include <stddef.h>

#include "qs/event.h"

/* qs_event_validate without the text checks (termination within each array, UTF-8): for a
 * decoder that checked them while copying. */
int qs_event_validate_values(const qs_event *ev, char *why, size_t whylen);

#endif
