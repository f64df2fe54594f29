/* ingestor — polls USGS and weather feeds (or replays a file), dedupes, sends events to the hub.
 * Skeleton: configuration, admin endpoints and orderly shutdown; its work lands with its issue. */
#include "qs/service.h"

static const qs_service_def def = {
    .name = "ingestor",
    .summary = "polls USGS and weather feeds (or replays a file), dedupes, sends events to the hub",
    .admin_port = 8091,
};

int main(int argc, char **argv) {
  qs_service svc;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  return qs_service_run(&svc);
}
