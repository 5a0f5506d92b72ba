/* Not yet written. */
typedef int cpace_placeholder;
