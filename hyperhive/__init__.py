"""hyperhive: a host daemon for a swarm of autonomous coding agents."""
