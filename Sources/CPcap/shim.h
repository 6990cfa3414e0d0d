#ifndef SMPNET_CPCAP_SHIM_H
#define SMPNET_CPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
