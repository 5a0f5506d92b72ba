/* Not yet written. */
typedef int store_placeholder;
