/*
 * libuci's view of config files, for tests/uci_libuci.rs: reads config names on stdin, one
 * a line, loads each from CONFDIR with uci_load (what `uci show`, procd and LuCI use: strict
 * mode, as uci_alloc_context sets it) and prints, unambiguously:
 *
 *   section ANON NAME TYPE     ANON 1 for an anonymous section (NAME is libuci's cfgNNHHHH)
 *   option NAME VALUE
 *   list NAME ITEM...
 *   error REASON|LINE          libuci's parse error: reason and line
 *   error OTHER                any other failure, as uci_get_errorstr says it
 *   end
 *
 * Every string is hex with an 'x' in front (values are any bytes but NUL).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uci.h>

static void hex(const char *s)
{
	putchar(' ');
	putchar('x');
	for (; *s; s++)
		printf("%02x", (unsigned char)*s);
}

int main(int argc, char **argv)
{
	char name[4096];

	if (argc != 3) {
		fprintf(stderr, "usage: ucidump CONFDIR SAVEDIR <names\n");
		return 2;
	}
	while (fgets(name, sizeof(name), stdin)) {
		struct uci_context *ctx = uci_alloc_context();
		struct uci_package *p = NULL;
		struct uci_element *se, *oe, *ie;

		name[strcspn(name, "\n")] = 0;
		uci_set_confdir(ctx, argv[1]);
		/* no uncommitted changes, no /var/run/uci overrides: the file alone */
		uci_set_savedir(ctx, argv[2]);
		uci_set_conf2dir(ctx, NULL);
		if (uci_load(ctx, name, &p) != UCI_OK) {
			char *e = NULL, *reason, *at;

			uci_get_errorstr(ctx, &e, NULL);
			/* "Parse error (REASON) at line N, byte M" */
			reason = e ? strchr(e, '(') : NULL;
			at = e ? strstr(e, ") at line ") : NULL;
			if (reason && at && !strncmp(e, "Parse error", 11)) {
				*at = 0;
				printf("error %s|%d\n", reason + 1, atoi(at + 10));
			} else {
				printf("error %s\n", e ? e : "unknown");
			}
			free(e);
		} else {
			uci_foreach_element(&p->sections, se) {
				struct uci_section *s = uci_to_section(se);

				printf("section %d", s->anonymous ? 1 : 0);
				hex(se->name);
				hex(s->type);
				putchar('\n');
				uci_foreach_element(&s->options, oe) {
					struct uci_option *o = uci_to_option(oe);

					if (o->type == UCI_TYPE_STRING) {
						printf("option");
						hex(oe->name);
						hex(o->v.string);
					} else {
						printf("list");
						hex(oe->name);
						uci_foreach_element(&o->v.list, ie)
							hex(ie->name);
					}
					putchar('\n');
				}
			}
		}
		printf("end\n");
		fflush(stdout);
		uci_free_context(ctx);
	}
	return 0;
}
