/* test_regions.c — the region rules: known places, the antimeridian, the
 * poles, loading errors, and a classify throughput measurement (printed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qs/error.h"
#include "qs/regions.h"

typedef struct place {
  const char *name;
  double lat, lon;
  const char *region;
} place;

/* Coordinates of cities, faults and sea areas (rounded, from public
 * gazetteers); the expected region follows docs/regions.md. */
static const place places[] = {
    {"Ridgecrest CA", 35.77, -117.6, "us-west"},
    {"Anchorage", 61.2, -149.9, "alaska"},
    {"Adak, Aleutians", 51.9, -176.6, "alaska"},
    {"Attu, Aleutians", 52.9, 173.2, "alaska"},
    {"Hilo", 19.7, -155.1, "hawaii"},
    {"Oklahoma", 35.5, -97.5, "us-central"},
    {"Virginia (Mineral 2011)", 37.9, -77.9, "us-east"},
    {"Tokyo", 35.7, 139.7, "east-asia"},
    {"Santiago", -33.4, -70.6, "south-america"},
    {"Puerto Rico", 18.2, -66.5, "caribbean"},
    {"San Francisco", 37.77, -122.42, "us-west"},
    {"Seattle", 47.6, -122.3, "us-west"},
    {"Yellowstone", 44.6, -110.5, "us-west"},
    {"Salt Lake City", 40.76, -111.89, "us-west"},
    {"Offshore Oregon Blanco FZ", 43.9, -128.5, "us-west"},
    {"Calexico area", 32.8, -115.5, "us-west"},
    {"Mexicali", 32.62, -115.45, "mexico-central-america"},
    {"El Mayor-Cucapah 2010", 32.26, -115.29, "mexico-central-america"},
    {"Tijuana", 32.5, -117.0, "mexico-central-america"},
    {"New Madrid", 36.59, -89.53, "us-central"},
    {"Dallas", 32.8, -96.8, "us-central"},
    {"Denver", 39.74, -104.99, "us-west"},
    {"Houston", 29.76, -95.37, "us-central"},
    {"New York", 40.71, -74.0, "us-east"},
    {"Boston", 42.36, -71.06, "us-east"},
    {"Miami", 25.76, -80.19, "us-east"},
    {"Key West", 24.55, -81.8, "us-east"},
    {"Charleston SC", 32.78, -79.93, "us-east"},
    {"Detroit", 42.33, -83.05, "us-east"},
    {"Juneau", 58.3, -134.4, "alaska"},
    {"Fairbanks", 64.84, -147.72, "alaska"},
    {"Kodiak", 57.79, -152.4, "alaska"},
    {"Denali Fault 2002", 63.5, -147.4, "alaska"},
    {"Vancouver BC", 49.28, -123.12, "canada"},
    {"Victoria BC", 48.43, -123.37, "canada"},
    {"Haida Gwaii", 53.0, -132.0, "canada"},
    {"Montreal", 45.5, -73.57, "canada"},
    {"Ottawa", 45.42, -75.7, "canada"},
    {"Charlevoix", 47.5, -70.2, "canada"},
    {"Toronto", 43.65, -79.38, "canada"},
    {"Windsor ON", 42.28, -82.95, "canada"},
    {"Whitehorse", 60.72, -135.06, "canada"},
    {"Mexico City", 19.43, -99.13, "mexico-central-america"},
    {"Oaxaca coast", 15.9, -97.0, "mexico-central-america"},
    {"Guatemala City", 14.63, -90.5, "mexico-central-america"},
    {"San Salvador", 13.7, -89.2, "mexico-central-america"},
    {"Costa Rica", 9.93, -84.08, "mexico-central-america"},
    {"Panama City", 8.98, -79.52, "mexico-central-america"},
    {"Havana", 23.11, -82.37, "caribbean"},
    {"Port-au-Prince", 18.54, -72.34, "caribbean"},
    {"Kingston Jamaica", 17.97, -76.79, "caribbean"},
    {"Martinique", 14.64, -61.02, "caribbean"},
    {"Trinidad", 10.65, -61.5, "caribbean"},
    {"Nassau", 25.05, -77.35, "caribbean"},
    {"Bogota", 4.71, -74.07, "south-america"},
    {"Caracas", 10.48, -66.9, "south-america"},
    {"Lima", -12.05, -77.04, "south-america"},
    {"Quito", -0.18, -78.47, "south-america"},
    {"Maule 2010", -35.9, -72.7, "south-america"},
    {"Galapagos", -0.9, -90.6, "south-america"},
    {"South Sandwich Is", -57.5, -26.5, "south-america"},
    {"Reykjavik", 64.15, -21.94, "europe"},
    {"Azores", 37.74, -25.67, "europe"},
    {"Lisbon", 38.72, -9.14, "europe"},
    {"Granada Spain", 37.18, -3.6, "europe"},
    {"L'Aquila", 42.35, 13.4, "europe"},
    {"Catania", 37.5, 15.09, "europe"},
    {"Athens", 37.98, 23.73, "europe"},
    {"Heraklion Crete", 35.34, 25.13, "europe"},
    {"Rhodes south", 35.9, 27.8, "europe"},
    {"Bucharest", 44.43, 26.1, "europe"},
    {"Zagreb", 45.81, 15.98, "europe"},
    {"Oslo", 59.91, 10.75, "europe"},
    {"Moscow", 55.75, 37.62, "europe"},
    {"Svalbard", 78.22, 15.65, "europe"},
    {"Istanbul", 41.01, 28.98, "middle-east"},
    {"Izmir", 38.42, 27.14, "middle-east"},
    {"Kahramanmaras 2023", 37.17, 37.03, "middle-east"},
    {"Tbilisi", 41.72, 44.79, "middle-east"},
    {"Baku", 40.41, 49.87, "middle-east"},
    {"Tehran", 35.69, 51.39, "middle-east"},
    {"Bam", 29.1, 58.36, "middle-east"},
    {"Baghdad", 33.31, 44.36, "middle-east"},
    {"Beirut", 33.89, 35.5, "middle-east"},
    {"Nicosia", 35.17, 33.36, "middle-east"},
    {"Riyadh", 24.71, 46.68, "middle-east"},
    {"Sanaa", 15.37, 44.19, "middle-east"},
    {"Muscat", 23.59, 58.41, "middle-east"},
    {"Cairo", 30.04, 31.24, "africa"},
    {"Algiers", 36.75, 3.06, "africa"},
    {"Tunis", 36.8, 10.18, "africa"},
    {"Rabat", 34.02, -6.83, "africa"},
    {"Al Hoceima", 35.25, -3.93, "africa"},
    {"Addis Ababa", 9.03, 38.74, "africa"},
    {"Djibouti", 11.59, 43.15, "africa"},
    {"Nairobi", -1.29, 36.82, "africa"},
    {"Kinshasa", -4.44, 15.27, "africa"},
    {"Lagos", 6.52, 3.38, "africa"},
    {"Accra", 5.6, -0.19, "africa"},
    {"Cape Town", -33.92, 18.42, "africa"},
    {"Antananarivo", -18.88, 47.51, "africa"},
    {"Tenerife", 28.29, -16.63, "africa"},
    {"Reunion", -21.11, 55.53, "africa"},
    {"Kabul", 34.53, 69.17, "south-asia"},
    {"Hindu Kush", 36.5, 70.8, "south-asia"},
    {"Islamabad", 33.68, 73.05, "south-asia"},
    {"Karachi", 24.86, 67.0, "south-asia"},
    {"Delhi", 28.61, 77.21, "south-asia"},
    {"Mumbai", 19.08, 72.88, "south-asia"},
    {"Kathmandu", 27.72, 85.32, "south-asia"},
    {"Gorkha 2015", 28.23, 84.73, "south-asia"},
    {"Bhuj 2001", 23.42, 70.23, "south-asia"},
    {"Dhaka", 23.81, 90.41, "south-asia"},
    {"Shillong", 25.57, 91.88, "south-asia"},
    {"Colombo", 6.93, 79.86, "south-asia"},
    {"Port Blair", 11.62, 92.73, "south-asia"},
    {"Male", 4.17, 73.51, "south-asia"},
    {"Yangon", 16.87, 96.2, "southeast-asia"},
    {"Mandalay", 21.97, 96.08, "southeast-asia"},
    {"Bangkok", 13.76, 100.5, "southeast-asia"},
    {"Hanoi", 21.03, 105.85, "southeast-asia"},
    {"Manila", 14.6, 120.98, "southeast-asia"},
    {"Jakarta", -6.2, 106.85, "southeast-asia"},
    {"Banda Aceh", 5.55, 95.32, "southeast-asia"},
    {"Palu", -0.9, 119.87, "southeast-asia"},
    {"Dili", -8.56, 125.57, "southeast-asia"},
    {"Jayapura", -2.53, 140.72, "southeast-asia"},
    {"Mindanao trench", 7.0, 127.5, "southeast-asia"},
    {"Beijing", 39.9, 116.4, "east-asia"},
    {"Wenchuan 2008", 31.0, 103.4, "east-asia"},
    {"Lhasa", 29.65, 91.1, "east-asia"},
    {"Kashgar", 39.47, 75.99, "east-asia"},
    {"Urumqi", 43.83, 87.62, "east-asia"},
    {"Kunming", 25.04, 102.71, "east-asia"},
    {"Hong Kong", 22.32, 114.17, "east-asia"},
    {"Haikou Hainan", 20.04, 110.34, "east-asia"},
    {"Taipei", 25.03, 121.57, "east-asia"},
    {"Hualien", 23.99, 121.6, "east-asia"},
    {"Seoul", 37.57, 126.98, "east-asia"},
    {"Busan", 35.18, 129.08, "east-asia"},
    {"Pyongyang", 39.04, 125.76, "east-asia"},
    {"Ulaanbaatar", 47.89, 106.91, "east-asia"},
    {"Harbin", 45.8, 126.53, "east-asia"},
    {"Sapporo", 43.06, 141.35, "east-asia"},
    {"Sendai offshore 2011", 38.3, 142.4, "east-asia"},
    {"Okinawa", 26.21, 127.68, "east-asia"},
    {"Kobe", 34.69, 135.2, "east-asia"},
    {"Vladivostok", 43.12, 131.89, "russia-central-asia"},
    {"Petropavlovsk-Kamchatsky", 53.02, 158.65, "russia-central-asia"},
    {"Iturup, Kurils", 45.0, 147.7, "russia-central-asia"},
    {"Sakhalin", 50.0, 143.0, "russia-central-asia"},
    {"Irkutsk", 52.29, 104.3, "russia-central-asia"},
    {"Novosibirsk", 55.01, 82.93, "russia-central-asia"},
    {"Almaty", 43.24, 76.89, "russia-central-asia"},
    {"Bishkek", 42.87, 74.59, "russia-central-asia"},
    {"Dushanbe", 38.56, 68.78, "russia-central-asia"},
    {"Tashkent", 41.3, 69.24, "russia-central-asia"},
    {"Ashgabat", 37.95, 58.38, "russia-central-asia"},
    {"Anadyr", 64.73, 177.5, "russia-central-asia"},
    {"Chukotka east", 65.5, -172.0, "russia-central-asia"},
    {"Sydney", -33.87, 151.21, "oceania"},
    {"Perth", -31.95, 115.86, "oceania"},
    {"Darwin", -12.46, 130.84, "oceania"},
    {"Christchurch", -43.53, 172.64, "oceania"},
    {"Wellington", -41.29, 174.78, "oceania"},
    {"Kermadec", -30.0, -177.9, "oceania"},
    {"Port Moresby", -9.44, 147.18, "oceania"},
    {"Honiara", -9.43, 159.95, "oceania"},
    {"Port Vila", -17.73, 168.32, "oceania"},
    {"Noumea", -22.27, 166.46, "oceania"},
    {"Suva Fiji", -18.14, 178.44, "oceania"},
    {"Fiji east", -17.0, -179.5, "oceania"},
    {"Tonga", -21.14, -175.2, "oceania"},
    {"Apia Samoa", -13.83, -171.76, "oceania"},
    {"Guam", 13.44, 144.79, "oceania"},
    {"Palau", 7.5, 134.5, "oceania"},
    {"Fais Micronesia", 10.0, 140.13, "oceania"},
    {"Tahiti", -17.53, -149.57, "oceania"},
    {"Macquarie Island", -54.6, 158.9, "oceania"},
    {"Nuuk", 64.18, -51.72, "arctic"},
    {"Greenland east", 72.0, -25.0, "arctic"},
    {"North Pole", 90.0, 0.0, "arctic"},
    {"Gakkel Ridge", 86.0, 60.0, "arctic"},
    {"Bermuda", 32.3, -64.78, "atlantic-ocean"},
    {"Mid-Atlantic Ridge 30N", 30.0, -42.0, "atlantic-ocean"},
    {"Mid-Atlantic Ridge equator", 0.9, -29.0, "atlantic-ocean"},
    {"Ascension", -7.95, -14.36, "atlantic-ocean"},
    {"Tristan da Cunha", -37.1, -12.3, "atlantic-ocean"},
    {"Reykjanes Ridge", 57.0, -33.0, "atlantic-ocean"},
    {"Carlsberg Ridge", 5.0, 62.0, "indian-ocean"},
    {"Central Indian Ridge", -15.0, 67.0, "indian-ocean"},
    {"SW Indian Ridge", -40.0, 45.0, "indian-ocean"},
    {"South of Australia", -50.0, 130.0, "indian-ocean"},
    {"East Pacific Rise", -20.0, -113.0, "pacific-ocean"},
    {"Easter Island", -27.1, -109.4, "pacific-ocean"},
    {"Mid Pacific", 30.0, -150.0, "pacific-ocean"},
    {"Bering Sea", 58.0, 178.0, "pacific-ocean"},
    {"Off Japan south", 28.0, 135.0, "pacific-ocean"},
    {"Pacific east of Kurils", 40.0, 160.0, "pacific-ocean"},
    {"South Pole", -90.0, 0.0, "antarctica"},
    {"Antarctic Peninsula", -64.0, -60.0, "antarctica"},
    {"Ross Sea", -75.0, 175.0, "antarctica"},
    {"Antimeridian 52N east", 52.0, 179.9, "alaska"},
    {"Antimeridian 52N west", 52.0, -179.9, "alaska"},
    {"Antimeridian 0 east", 0.0, 179.9, "oceania"},
    {"Antimeridian 0 west", 0.0, -179.9, "oceania"},
    {"Antimeridian 30N east", 30.0, 179.9, "pacific-ocean"},
    {"Antimeridian 30N west", 30.0, -179.9, "pacific-ocean"},
    {"Antimeridian -40 east", -40.0, 179.9, "oceania"},
    {"Antimeridian -40 west", -40.0, -179.9, "oceania"},
    {"Antimeridian 65N east", 65.0, 179.9, "russia-central-asia"},
    {"Antimeridian 65N west", 65.0, -179.9, "russia-central-asia"},
    {"Antimeridian -70 east", -70.0, 179.9, "antarctica"},
    {"Antimeridian -70 west", -70.0, -179.9, "antarctica"},
    {"Antimeridian 80N east", 80.0, 180.0, "arctic"},
    {"Antimeridian 80N west", 80.0, -180.0, "arctic"},
    {"Antimeridian -17 exactly", -17.0, 180.0, "oceania"},
    {"Antimeridian -17 exactly west", -17.0, -180.0, "oceania"},
    {"Bimini Bahamas", 25.73, -79.28, "caribbean"},
    {"Grand Bahama", 26.6, -78.5, "caribbean"},
    {"Atlantic off Carolinas", 31.0, -76.0, "atlantic-ocean"},
    {"Cape Hatteras", 35.25, -75.53, "us-east"},
    {"Nantucket", 41.28, -70.1, "us-east"},
    {"Bar Harbor Maine", 44.39, -68.2, "us-east"},
    {"Commander Islands", 55.0, 166.0, "russia-central-asia"},
    {"Provideniya", 64.42, -173.23, "russia-central-asia"},
    {"St Lawrence Island", 63.5, -170.5, "alaska"},
    {"Odisha coast", 20.0, 86.5, "south-asia"},
    {"Bay of Bengal", 15.0, 88.0, "south-asia"},
    {"Mid Atlantic US-latitude", 38.0, -45.0, "atlantic-ocean"},
};

static int setup_default(void **state) {
  qs_regions *r = malloc(sizeof *r);
  if (!r)
    return -1;
  qs_regions_init(r);
  char why[256];
  if (qs_regions_load_default(r, why, sizeof why) != 0) {
    fprintf(stderr, "default regions: %s\n", why);
    free(r);
    return -1;
  }
  *state = r;
  return 0;
}

static int teardown_default(void **state) {
  qs_regions *r = *state;
  qs_regions_close(r);
  free(r);
  return 0;
}

static void test_known_places_classify_to_their_region(void **state) {
  const qs_regions *r = *state;
  int bad = 0;
  for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
    const char *got = qs_regions_classify(r, places[i].lat, places[i].lon);
    if (!got || strcmp(got, places[i].region) != 0) {
      printf("# %s (%g, %g): got %s, want %s\n", places[i].name, places[i].lat, places[i].lon,
             got ? got : "NULL", places[i].region);
      bad++;
    }
  }
  assert_int_equal(bad, 0);
}

static void test_the_brief_places(void **state) {
  const qs_regions *r = *state;
  assert_string_equal(qs_regions_classify(r, 35.77, -117.6), "us-west");
  assert_string_equal(qs_regions_classify(r, 61.2, -149.9), "alaska");
  assert_string_equal(qs_regions_classify(r, 51.9, -176.6), "alaska");
  assert_string_equal(qs_regions_classify(r, 52.9, 173.2), "alaska");
  assert_string_equal(qs_regions_classify(r, 19.7, -155.1), "hawaii");
  assert_string_equal(qs_regions_classify(r, 35.5, -97.5), "us-central");
  assert_string_equal(qs_regions_classify(r, 37.9, -77.9), "us-east");
  assert_string_equal(qs_regions_classify(r, 35.7, 139.7), "east-asia");
  assert_string_equal(qs_regions_classify(r, -33.4, -70.6), "south-america");
  assert_string_equal(qs_regions_classify(r, 18.2, -66.5), "caribbean");
}

/* No point outside North America is ever us-* (1° grid over the world). */
static void test_us_regions_stay_in_north_america(void **state) {
  const qs_regions *r = *state;
  for (int lat = -90; lat <= 90; lat++) {
    for (int lon = -180; lon <= 180; lon++) {
      const char *name = qs_regions_classify(r, lat, lon);
      assert_non_null(name);
      assert_string_not_equal(name, "other"); /* the catch-all is never reached */
      if (strncmp(name, "us-", 3) == 0) {
        if (!(lat >= 24 && lat <= 49 && lon >= -131 && lon <= -66))
          fail_msg("(%d, %d) classified %s", lat, lon, name);
      }
    }
  }
}

static void test_both_sides_of_the_antimeridian_agree(void **state) {
  const qs_regions *r = *state;
  for (double lat = -89.5; lat <= 89.5; lat += 0.5) {
    const char *east = qs_regions_classify(r, lat, 179.9);
    const char *west = qs_regions_classify(r, lat, -179.9);
    const char *e180 = qs_regions_classify(r, lat, 180.0);
    const char *w180 = qs_regions_classify(r, lat, -180.0);
    assert_non_null(east);
    assert_non_null(west);
    if (strcmp(east, west) != 0 || strcmp(east, e180) != 0)
      fail_msg("lat %g: 179.9 -> %s, -179.9 -> %s, 180 -> %s", lat, east, west, e180);
    assert_string_equal(e180, w180); /* the same meridian */
  }
}

static void test_poles_have_a_region(void **state) {
  const qs_regions *r = *state;
  assert_string_equal(qs_regions_classify(r, 90, 0), "arctic");
  assert_string_equal(qs_regions_classify(r, 90, 180), "arctic");
  assert_string_equal(qs_regions_classify(r, 90, -135), "arctic");
  assert_string_equal(qs_regions_classify(r, -90, 0), "antarctica");
  assert_string_equal(qs_regions_classify(r, -90, -180), "antarctica");
}

static void test_invalid_points_have_no_region(void **state) {
  const qs_regions *r = *state;
  assert_null(qs_regions_classify(r, NAN, 0));
  assert_null(qs_regions_classify(r, 0, NAN));
  assert_null(qs_regions_classify(r, 90.0001, 0));
  assert_null(qs_regions_classify(r, 0, -180.0001));
  assert_null(qs_regions_classify(r, INFINITY, 0));
  qs_regions empty;
  qs_regions_init(&empty);
  assert_null(qs_regions_classify(&empty, 0, 0));
  assert_int_equal(qs_regions_count(&empty), 0);
}

static void test_rule_names_are_listed_in_order(void **state) {
  const qs_regions *r = *state;
  assert_true(qs_regions_count(r) >= 20);
  assert_string_equal(qs_regions_name(r, 0), "alaska");
  assert_string_equal(qs_regions_name(r, qs_regions_count(r) - 1), "other");
  assert_null(qs_regions_name(r, qs_regions_count(r)));
}

static void test_embedded_default_matches_proto_file(void **state) {
  const qs_regions *def = *state;
  char path[1024], why[256];
  const char *src = getenv("QS_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/proto/regions.json", src ? src : ".");
  qs_regions fromfile;
  qs_regions_init(&fromfile);
  assert_int_equal(qs_regions_load_file(&fromfile, path, why, sizeof why), 0);
  assert_int_equal(fromfile.nrules, def->nrules);
  assert_int_equal(fromfile.nboxes, def->nboxes);
  assert_memory_equal(fromfile.boxes, def->boxes, def->nboxes * sizeof *def->boxes);
  qs_regions_close(&fromfile);
}

typedef struct bad_rules {
  const char *json;
  int rc;
  const char *why;
} bad_rules;

#define WORLD "{\"min_lat\":-90,\"max_lat\":90,\"min_lon\":-180,\"max_lon\":180}"
#define OTHER "{\"name\":\"other\",\"boxes\":[" WORLD "]}"

static void test_bad_rule_files_are_rejected_with_clear_reasons(void **state) {
  (void)state;
  static const bad_rules cases[] = {
      {"{\"regions\":[", QS_ERR_PARSE, "regions: not valid JSON"},
      {"[]", QS_ERR_INVALID, "regions: the document must be an object"},
      {"{\"regions\":[]}", QS_ERR_INVALID, "regions: 0 rules, must be 1..64"},
      {"{\"regions\":[{\"boxes\":[" WORLD "]}]}", QS_ERR_INVALID,
       "regions[0]: name missing or not a string"},
      {"{\"regions\":[{\"name\":\"Bad Name\",\"boxes\":[" WORLD "]}]}", QS_ERR_INVALID,
       "regions[0]: name must be 1..32 characters of [a-z0-9_-]"},
      {"{\"regions\":[{\"name\":\"x\",\"boxes\":[]}," OTHER "]}", QS_ERR_INVALID,
       "regions[0] \"x\": boxes must be an array of 1..64 boxes"},
      {"{\"regions\":[{\"name\":\"x\",\"boxes\":[{\"min_lat\":95,\"max_lat\":96,\"min_lon\":0,"
       "\"max_lon\":1}]}," OTHER "]}",
       QS_ERR_INVALID, "regions[0] \"x\": boxes[0]: min_lat 95 out of range [-90, 90]"},
      {"{\"regions\":[{\"name\":\"x\",\"boxes\":[" WORLD ",{\"min_lat\":0,\"max_lat\":1,"
       "\"min_lon\":0,\"max_lon\":181}]}," OTHER "]}",
       QS_ERR_INVALID, "regions[0] \"x\": boxes[1]: max_lon 181 out of range [-180, 180]"},
      {"{\"regions\":[{\"name\":\"x\",\"boxes\":[{\"min_lat\":0,\"max_lat\":1,\"min_lon\":0}]}"
       "," OTHER "]}",
       QS_ERR_INVALID, "regions[0] \"x\": boxes[0]: max_lon missing or not a number"},
      {"{\"regions\":[{\"name\":\"x\",\"boxes\":[{\"min_lat\":5,\"max_lat\":1,\"min_lon\":0,"
       "\"max_lon\":1}]}," OTHER "]}",
       QS_ERR_INVALID, "regions[0] \"x\": boxes[0]: min_lat 5 above max_lat 1"},
      {"{\"regions\":[" OTHER "," OTHER "]}", QS_ERR_INVALID,
       "regions[1]: duplicate name \"other\" (also regions[0])"},
      {"{\"regions\":[{\"name\":\"x\",\"boxes\":[{\"min_lat\":0,\"max_lat\":1,\"min_lon\":0,"
       "\"max_lon\":1}]}]}",
       QS_ERR_INVALID, "regions[0] \"x\": the last rule must be a catch-all"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qs_regions r;
    qs_regions_init(&r);
    char why[256] = "";
    int rc = qs_regions_load_json(&r, cases[i].json, strlen(cases[i].json), why, sizeof why);
    if (rc != cases[i].rc || strncmp(why, cases[i].why, strlen(cases[i].why)) != 0)
      fail_msg("case %zu: rc %d why \"%s\", want %d \"%s...\"", i, rc, why, cases[i].rc,
               cases[i].why);
    assert_int_equal(qs_regions_count(&r), 0);
    qs_regions_close(&r);
  }
}

static void test_too_many_rules_are_rejected(void **state) {
  (void)state;
  size_t cap = 200000, n = 0;
  char *json = malloc(cap);
  assert_non_null(json);
  n += (size_t)snprintf(json + n, cap - n, "{\"regions\":[");
  for (int i = 0; i <= QS_REGIONS_MAX_RULES; i++)
    n += (size_t)snprintf(json + n, cap - n, "{\"name\":\"r%d\",\"boxes\":[" WORLD "]}%s", i,
                          i < QS_REGIONS_MAX_RULES ? "," : "]}");
  qs_regions r;
  qs_regions_init(&r);
  char why[256];
  assert_int_equal(qs_regions_load_json(&r, json, n, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "regions: 65 rules, must be 1..64");
  free(json);
}

static void test_failed_load_keeps_the_previous_rules(void **state) {
  qs_regions *r = *state;
  char why[256];
  assert_int_equal(qs_regions_load_json(r, "{}", 2, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(qs_regions_classify(r, 35.77, -117.6), "us-west");
  assert_int_equal(qs_regions_load_file(r, "/nonexistent/regions.json", why, sizeof why),
                   QS_ERR_IO);
  assert_non_null(strstr(why, "/nonexistent/regions.json"));
  assert_string_equal(qs_regions_classify(r, 35.77, -117.6), "us-west");
}

static void test_antimeridian_box_and_edges_in_a_custom_file(void **state) {
  (void)state;
  static const char json[] =
      "{\"regions\":["
      "{\"name\":\"dateline\",\"boxes\":[{\"min_lat\":-10,\"max_lat\":10,\"min_lon\":170,"
      "\"max_lon\":-170}]},"
      "{\"name\":\"edge\",\"boxes\":[{\"min_lat\":20,\"max_lat\":30,\"min_lon\":170,"
      "\"max_lon\":180}]}," OTHER "]}";
  qs_regions r;
  qs_regions_init(&r);
  char why[256];
  assert_int_equal(qs_regions_load_json(&r, json, strlen(json), why, sizeof why), 0);
  assert_string_equal(qs_regions_classify(&r, 0, 175), "dateline");
  assert_string_equal(qs_regions_classify(&r, 0, -175), "dateline");
  assert_string_equal(qs_regions_classify(&r, 0, 180), "dateline");
  assert_string_equal(qs_regions_classify(&r, 0, -180), "dateline");
  assert_string_equal(qs_regions_classify(&r, 10, -170), "dateline"); /* edges included */
  assert_string_equal(qs_regions_classify(&r, 0, -169.9), "other");
  assert_string_equal(qs_regions_classify(&r, 0, 169.9), "other");
  assert_string_equal(qs_regions_classify(&r, 25, -180), "edge"); /* -180 is 180 */
  assert_string_equal(qs_regions_classify(&r, 25, -179.9), "other");
  qs_regions_close(&r);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_measure_classify_rate(void **state) {
  const qs_regions *r = *state;
  const size_t n = sizeof places / sizeof places[0];
  const int rounds = 2000;
  size_t hits = 0;
  double t0 = now_s();
  for (int k = 0; k < rounds; k++)
    for (size_t i = 0; i < n; i++)
      hits += qs_regions_classify(r, places[i].lat, places[i].lon) != NULL;
  double t1 = now_s();
  assert_int_equal(hits, n * (size_t)rounds);
  printf("# regions: %zu rules, %zu boxes, classify %.0f/s (mixed world points)\n",
         qs_regions_count(r), r->nboxes, (double)hits / (t1 - t0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known_places_classify_to_their_region),
      cmocka_unit_test(test_the_brief_places),
      cmocka_unit_test(test_us_regions_stay_in_north_america),
      cmocka_unit_test(test_both_sides_of_the_antimeridian_agree),
      cmocka_unit_test(test_poles_have_a_region),
      cmocka_unit_test(test_invalid_points_have_no_region),
      cmocka_unit_test(test_rule_names_are_listed_in_order),
      cmocka_unit_test(test_embedded_default_matches_proto_file),
      cmocka_unit_test(test_bad_rule_files_are_rejected_with_clear_reasons),
      cmocka_unit_test(test_too_many_rules_are_rejected),
      cmocka_unit_test(test_failed_load_keeps_the_previous_rules),
      cmocka_unit_test(test_antimeridian_box_and_edges_in_a_custom_file),
      cmocka_unit_test(test_measure_classify_rate),
  };
  return cmocka_run_group_tests(tests, setup_default, teardown_default);
}
