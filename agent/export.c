/* Not yet written. */
typedef int export_placeholder;
