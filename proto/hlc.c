/* Not yet written. */
typedef int hlc_placeholder;
