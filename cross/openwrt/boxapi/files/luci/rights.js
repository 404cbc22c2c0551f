'use strict';
'require view';
'require rpc';
'require ui';

// Services > Measurement API: the subscriber's view of boxapi through the rpcd plugin (ubus
// object "boxapi"): switch the API on or off, see each speed-test tool and when it last read the
// line's data, and withhold card sections from every tool or from one.

var SECTIONS = ['box', 'subscription', 'access', 'wifi', 'client', 'counters'];

var callStatus = rpc.declare({ object: 'boxapi', method: 'status' });
var callTools = rpc.declare({ object: 'boxapi', method: 'tools' });
var callEnable = rpc.declare({ object: 'boxapi', method: 'enable' });
var callDisable = rpc.declare({ object: 'boxapi', method: 'disable' });
var callWithhold = rpc.declare({ object: 'boxapi', method: 'withhold', params: ['section', 'tool'] });
var callAllow = rpc.declare({ object: 'boxapi', method: 'allow', params: ['section', 'tool'] });

// The plugin answers {"error": "..."} when something is wrong; show it and reload the page.
function done(reply) {
	if (reply && reply.error)
		ui.addNotification(null, E('p', _('Measurement API: %s').format(reply.error)), 'danger');
	return window.location.reload();
}

function toolRow(t) {
	var withheld = t.withheld || [];
	var boxes = SECTIONS.map(function(s) {
		var shared = withheld.indexOf(s) < 0;
		return E('label', { 'style': 'margin-right:1em' }, [
			E('input', {
				'type': 'checkbox',
				'checked': shared ? '' : null,
				'change': function(ev) {
					var call = ev.target.checked ? callAllow : callWithhold;
					return call(s, t.id).then(done);
				}
			}),
			' ', s
		]);
	});
	return E('tr', { 'class': 'tr' }, [
		E('td', { 'class': 'td' }, [ E('strong', {}, t.name), E('br'), t.id ]),
		E('td', { 'class': 'td' }, t.state),
		E('td', { 'class': 'td' }, t.expires || '-'),
		E('td', { 'class': 'td' }, t.last_access || _('never')),
		E('td', { 'class': 'td' }, String(t.requests)),
		E('td', { 'class': 'td' }, boxes)
	]);
}

return view.extend({
	load: function() {
		return Promise.all([ callStatus(), callTools() ]);
	},

	render: function(data) {
		var status = data[0] || {}, tools = (data[1] && data[1].tools) || [];
		var on = status.state !== 'disabled';
		return E('div', {}, [
			E('h2', {}, _('Measurement API')),
			E('p', {}, _('Speed-test tools read your line\'s identity card through this API. Untick a section to stop sharing it with a tool.')),
			E('p', {}, [
				_('State: %s').format(status.state || _('unknown')), ' ',
				E('button', {
					'class': 'btn cbi-button',
					'click': function() { return (on ? callDisable() : callEnable()).then(done); }
				}, on ? _('Switch off') : _('Switch on'))
			]),
			E('table', { 'class': 'table' }, [
				E('tr', { 'class': 'tr table-titles' }, [
					E('th', { 'class': 'th' }, _('Tool')),
					E('th', { 'class': 'th' }, _('State')),
					E('th', { 'class': 'th' }, _('Authorised until')),
					E('th', { 'class': 'th' }, _('Last access')),
					E('th', { 'class': 'th' }, _('Requests')),
					E('th', { 'class': 'th' }, _('Shared sections'))
				])
			].concat(tools.map(toolRow)))
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
