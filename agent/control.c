/* Not yet written. */
typedef int control_placeholder;
