/* Not yet written. */
typedef int import_placeholder;
